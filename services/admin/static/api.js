// The admin API as the page calls it: one fetch wrapper that turns every failure into the
// queue's one error shape ({"detail": ...}) as text, so each action can say why it failed.

let token = sessionStorage.getItem("cockpit-token");
let onUnauthorized = () => {};

export const session = {
  get token() { return token; },
  set(t) {
    token = t;
    if (t) sessionStorage.setItem("cockpit-token", t);
    else sessionStorage.removeItem("cockpit-token");
  },
  onUnauthorized(fn) { onUnauthorized = fn; },
};

/** The reason in an error answer, whatever its shape. */
export function detail(data, status) {
  if (data && typeof data.detail === "string") return data.detail;
  if (data && data.detail) return JSON.stringify(data.detail);
  if (data && data.error && data.error.message) return data.error.message;
  return `HTTP ${status}`;
}

/** Call the queue; `raw: true` keeps the body as text (the credentials sheet is HTML). */
export async function api(method, path, body, { raw = false } = {}) {
  const opts = { method, headers: { Authorization: `Bearer ${token}` } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, opts);
  } catch (err) {
    return { ok: false, status: 0, data: null, error: `queue unreachable (${err.message})` };
  }
  let data = null;
  if (raw && r.ok) data = await r.text();
  else data = await r.json().catch(() => null);
  if (r.status === 401 && token) onUnauthorized();
  const error = r.ok ? null
    : r.status === 404 && !(data && data.detail)
      ? "not available on this queue (404)" : detail(data, r.status);
  return { ok: r.ok, status: r.status, data, error };
}
