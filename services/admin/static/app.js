// The organizer's cockpit: signs in as an admin, loads the admin API, then stays live over
// /api/events (resuming with ?since= after a drop). No build step, no libraries: the DOM is
// updated in place (rows keyed by job, worker and user) so keyboard focus survives updates.

const $ = (sel) => document.querySelector(sel);
const LIVE = ["queued", "leased", "running"];
const FINAL = ["succeeded", "failed", "cancelled"];
const STATE_EVENTS = new Set([...LIVE, ...FINAL, "requeued", "cancel_requested", "declined"]);
const KEEP_FINISHED = 10;

const st = {
  token: sessionStorage.getItem("cockpit-token"),
  jobs: new Map(),
  workers: [],
  users: [],
  usage: new Map(),
  lastEvent: null,
  ws: null,
  wsDelay: 1000,
  refreshTimer: null,
  refreshing: false,
  refreshAgain: false,
  timers: [],
  paused: false,
};

// -- API -------------------------------------------------------------------------------------
async function api(method, path, body) {
  const opts = { method, headers: { Authorization: `Bearer ${st.token}` } };
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
  const data = await r.json().catch(() => null);
  if (r.status === 401 && st.token) signOut("Your session ended: sign in again.");
  const error = r.ok ? null : detail(data, r.status);
  return { ok: r.ok, status: r.status, data, error };
}

function detail(data, status) {
  if (data && typeof data.detail === "string") return data.detail;
  if (data && data.detail) return JSON.stringify(data.detail);
  if (data && data.error && data.error.message) return data.error.message;
  return `HTTP ${status}`;
}

function say(text, bad = false) {
  const el = $("#action-msg");
  el.textContent = text;
  el.classList.toggle("error", bad);
}

async function act(what, method, path, body) {
  const r = await api(method, path, body);
  if (r.ok) say(`${what}: done`);
  else say(`${what} failed: ${r.status === 404 ? "not available on this queue (404)" : r.error}`, true);
  scheduleRefresh(0);
  return r;
}

// -- sign in / out ---------------------------------------------------------------------------
async function login(ev) {
  ev.preventDefault();
  const username = $("#login-user").value.trim();
  const password = $("#login-password").value;
  const err = $("#login-error");
  err.textContent = "";
  let r;
  try {
    r = await fetch("/api/auth/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
  } catch (e) {
    err.textContent = `The queue is unreachable: ${e.message}`;
    return;
  }
  const data = await r.json().catch(() => null);
  if (!r.ok) {
    err.textContent = r.status === 401
      ? "Wrong name or password."
      : `Sign-in failed: ${detail(data, r.status)}`;
    return;
  }
  if (data.role !== "admin") {
    err.textContent = `${username} is a ${data.role} account: the cockpit is for the organizer's admin account only.`;
    return;
  }
  $("#login-password").value = "";
  st.token = data.access_token;
  sessionStorage.setItem("cockpit-token", st.token);
  await start();
}

async function checkToken() {
  const r = await fetch("/api/me", { headers: { Authorization: `Bearer ${st.token}` } });
  const me = r.ok ? await r.json() : null;
  return me && me.role === "admin";
}

function signOut(message = "") {
  st.token = null;
  sessionStorage.removeItem("cockpit-token");
  if (st.ws) { st.ws.onclose = null; st.ws.close(); st.ws = null; }
  st.timers.forEach(clearInterval);
  st.timers = [];
  $("#dash").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#live").textContent = "signed out";
  $("#login-error").textContent = message;
}

async function start() {
  $("#login").hidden = true;
  $("#dash").hidden = false;
  $("#logout").hidden = false;
  connect();
  await Promise.all([refreshCore(), refreshSlow(), loadUsers()]);
  st.timers.push(setInterval(renderTimes, 1000));
  st.timers.push(setInterval(refreshSlow, 15000));
}

// -- live events -----------------------------------------------------------------------------
function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const q = new URLSearchParams({ token: st.token });
  if (st.lastEvent) q.set("since", st.lastEvent);
  const ws = new WebSocket(`${proto}//${location.host}/api/events?${q}`);
  st.ws = ws;
  ws.onopen = () => {
    st.wsDelay = 1000;
    $("#live").textContent = "live";
    $("#live").dataset.live = "1";
  };
  ws.onmessage = (m) => onEvent(JSON.parse(m.data));
  ws.onclose = (c) => {
    $("#live").dataset.live = "0";
    if (st.ws !== ws) return;
    if (c.code === 4401 || c.code === 4403) { signOut("Your session ended: sign in again."); return; }
    $("#live").textContent = "reconnecting…";
    setTimeout(() => { if (st.token && st.ws === ws) { connect(); scheduleRefresh(0); } }, st.wsDelay);
    st.wsDelay = Math.min(st.wsDelay * 2, 10000);
  };
}

const eventMs = (id) => Number(String(id).split("-")[0]);

function onEvent(e) {
  st.lastEvent = e.id;
  const at = eventMs(e.id);
  if (e.type === "mode") { if (e.data && e.data.mode) showMode(e.data.mode); return; }
  if (e.type === "paused") { setPaused(Boolean(e.data && e.data.paused)); return; }
  if (!e.job) return;
  let job = st.jobs.get(e.job);
  if (!job) {
    job = { id: e.job, user: e.user, state: "queued", queued_at: at };
    st.jobs.set(e.job, job);
  }
  job.seen_at = at;
  if (e.type === "progress" && e.data) job.progress = e.data;
  if (e.type === "comfy" && e.data && e.data.type === "progress" && e.data.data) {
    job.progress = e.data.data;
  }
  if (e.type === "cancel_requested") job.cancel_requested = true;
  if (e.type === "requeued") { job.state = "queued"; job.progress = null; job.worker = null; }
  if (LIVE.includes(e.type) || FINAL.includes(e.type)) job.state = e.type;
  else if (e.state && LIVE.concat(FINAL).includes(e.state)) job.state = e.state;
  if (e.type === "leased") job.leased_at = at;
  if (e.type === "running" && !job.started_at) job.started_at = at;
  if (FINAL.includes(e.type)) job.finished_at = at;
  renderSoon();
  if (STATE_EVENTS.has(e.type)) scheduleRefresh(300);
}

// -- loading ---------------------------------------------------------------------------------
function scheduleRefresh(delay = 300) {
  if (st.refreshTimer !== null) return;
  st.refreshTimer = setTimeout(async () => {
    st.refreshTimer = null;
    if (st.refreshing) { st.refreshAgain = true; return; }
    st.refreshing = true;
    try { await refreshCore(); } finally { st.refreshing = false; }
    if (st.refreshAgain) { st.refreshAgain = false; scheduleRefresh(500); }
  }, delay);
}

async function refreshCore() {
  if (!st.token) return;
  const asOf = Date.now();
  const [ov, jobs, workers] = await Promise.all([
    api("GET", "/api/admin/overview"),
    api("GET", "/api/admin/jobs?limit=1000"),
    api("GET", "/api/admin/workers"),
  ]);
  if (ov.ok) {
    showMode(ov.data.mode);
    for (const s of LIVE) $(`#n-${s}`).textContent = ov.data.jobs[s] ?? 0;
    for (const s of ["succeeded", "failed"]) $(`#n-${s}`).textContent = (ov.data.finished || {})[s] ?? 0;
    if ("paused" in ov.data) setPaused(ov.data.paused);
  }
  if (jobs.ok) mergeJobs(jobs.data, asOf);
  if (workers.ok) st.workers = workers.data;
  renderSoon();
}

function mergeJobs(list, asOf) {
  const ids = new Set();
  for (const j of list) {
    ids.add(j.id);
    const mine = st.jobs.get(j.id);
    // An event newer than this snapshot wins over it.
    if (mine && mine.seen_at && mine.seen_at > asOf - 50) {
      Object.assign(mine, { ...j, state: mine.state, progress: mine.progress ?? j.progress });
    } else {
      st.jobs.set(j.id, { ...(mine || {}), ...j });
    }
  }
  for (const [id, j] of st.jobs) if (!ids.has(id) && FINAL.includes(j.state)) st.jobs.delete(id);
}

async function refreshSlow() {
  if (!st.token) return;
  const [usage, stats, cost, eta] = await Promise.all([
    api("GET", "/api/admin/usage"),
    api("GET", "/api/admin/stats?minutes=60"),
    api("GET", "/api/admin/cost"),
    api("GET", "/api/admin/eta"),
  ]);
  if (usage.ok) st.usage = new Map(usage.data.map((u) => [u.user, u]));
  const eur = (x) => (typeof x === "number" ? `€${x.toFixed(2)}` : "–");
  $("#cost-total").textContent = cost.ok ? eur(cost.data.total_eur) : "n/a";
  $("#cost-hour").textContent = cost.ok ? eur(cost.data.per_hour_eur) : "n/a";
  $("#eta-now").textContent = eta.ok ? etaText(eta.data.clear_s, eta.data.backlog) : "n/a";
  $("#eta-plus").textContent = eta.ok ? etaText(eta.data.clear_s_plus_one, eta.data.backlog) : "n/a";
  if (stats.ok) charts(stats.data.minutes || []);
  renderSoon();
}

async function loadUsers() {
  const r = await api("GET", "/api/admin/users");
  if (!r.ok) return;
  st.users = r.data;
  renderUsers();
}

// -- rendering -------------------------------------------------------------------------------
let renderQueued = false;
function renderSoon() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; renderJobs(); renderByUser(); renderWorkers(); });
}

function dur(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function etaText(s, backlog) {
  if (backlog === 0) return "nothing waiting";
  return s === null || s === undefined ? "no estimate yet" : dur(s);
}

function waitS(j, now) {
  if (!j.queued_at) return null;
  const end = j.leased_at || j.started_at || (j.state === "queued" ? now : j.finished_at || now);
  return (end - j.queued_at) / 1000;
}

function runS(j, now) {
  if (!j.started_at) return null;
  return ((FINAL.includes(j.state) ? j.finished_at || now : now) - j.started_at) / 1000;
}

function button(label, name, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.setAttribute("aria-label", name);
  b.addEventListener("click", onClick);
  return b;
}

function cells(tr, n) {
  while (tr.cells.length < n) tr.insertCell();
  return tr.cells;
}

/** Put rows in `order` (keyed by data-key) into tbody, moving nodes only when needed. */
function place(tbody, rows) {
  const current = Array.from(tbody.rows);
  const same = current.length === rows.length && current.every((r, i) => r === rows[i]);
  if (same) return;
  const keep = new Set(rows);
  for (const r of current) if (!keep.has(r)) r.remove();
  rows.forEach((r, i) => { if (tbody.rows[i] !== r) tbody.insertBefore(r, tbody.rows[i] || null); });
}

const jobRows = new Map();
function renderJobs() {
  const now = Date.now();
  const live = [], done = [];
  for (const j of st.jobs.values()) (LIVE.includes(j.state) ? live : done).push(j);
  const rank = { running: 0, leased: 1, queued: 2 };
  live.sort((a, b) => rank[a.state] - rank[b.state] || (a.position ?? 1e9) - (b.position ?? 1e9)
    || a.queued_at - b.queued_at);
  done.sort((a, b) => (b.finished_at || 0) - (a.finished_at || 0));
  const shown = live.concat(done.slice(0, KEEP_FINISHED));
  const rows = shown.map((j) => jobRow(j, now));
  for (const id of jobRows.keys()) if (!shown.some((j) => j.id === id)) jobRows.delete(id);
  place($("#jobs tbody"), rows);
}

function jobRow(j, now) {
  let tr = jobRows.get(j.id);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.job = j.id;
    const c = cells(tr, 8);
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = 0;
    bar.setAttribute("aria-label", `progress of job ${j.id}`);
    c[6].append(bar);
    c[7].append(
      button("Bump", `bump job ${j.id} to the front`, () =>
        act(`Bump ${j.id}`, "POST", `/api/admin/jobs/${encodeURIComponent(j.id)}/bump`)),
      button("Cancel", `cancel job ${j.id}`, () =>
        act(`Cancel ${j.id}`, "POST", `/api/jobs/${encodeURIComponent(j.id)}/cancel`)),
    );
    jobRows.set(j.id, tr);
  }
  const c = tr.cells;
  tr.dataset.state = j.state;
  c[0].textContent = j.id.length > 12 ? `${j.id.slice(0, 8)}…` : j.id;
  c[0].title = j.id;
  c[1].textContent = j.user;
  c[2].textContent = j.cancel_requested && LIVE.includes(j.state) ? `${j.state} (cancelling)` : j.state;
  c[3].textContent = j.state === "queued" && j.position ? j.position : "–";
  c[4].textContent = dur(waitS(j, now));
  c[5].textContent = dur(runS(j, now));
  const bar = c[6].firstChild;
  const p = j.progress;
  const frac = j.state === "succeeded" ? 1
    : p && p.max ? Math.min(1, p.value / p.max) : 0;
  if (bar.value !== frac) bar.value = frac;
  bar.dataset.value = frac.toFixed(3);
  const live = LIVE.includes(j.state);
  c[7].querySelectorAll("button").forEach((b) => { b.disabled = !live; });
  c[7].firstChild.disabled = j.state !== "queued";
  return tr;
}

function renderTimes() { renderJobs(); renderByUser(); renderWorkers(); }

const userRows = new Map();
function renderByUser() {
  const now = Date.now();
  const agg = new Map();
  const row = (u) => agg.get(u) || agg.set(u, { queued: 0, running: 0, wait: null }).get(u);
  for (const j of st.jobs.values()) {
    if (!LIVE.includes(j.state)) continue;
    const a = row(j.user);
    if (j.state === "queued") {
      a.queued += 1;
      a.wait = Math.max(a.wait ?? 0, waitS(j, now) ?? 0);
    } else a.running += 1;
  }
  for (const u of st.usage.keys()) row(u);
  const names = Array.from(agg.keys()).sort();
  const rows = names.map((u) => {
    let tr = userRows.get(u);
    if (!tr) { tr = document.createElement("tr"); tr.dataset.user = u; cells(tr, 8); userRows.set(u, tr); }
    const a = agg.get(u), use = st.usage.get(u) || {};
    const vals = [u, a.queued, a.running, dur(a.wait), use.jobs ?? "–", use.succeeded ?? "–",
      use.failed ?? "–", use.gpu_s !== undefined ? Number(use.gpu_s).toFixed(1) : "–"];
    vals.forEach((v, i) => { if (tr.cells[i].textContent !== String(v)) tr.cells[i].textContent = v; });
    return tr;
  });
  place($("#by-user tbody"), rows);
}

const workerRows = new Map();
function renderWorkers() {
  const rows = st.workers.map((w) => {
    let tr = workerRows.get(w.id);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.worker = w.id;
      cells(tr, 10);
      tr.cells[9].append(button("Drain", `drain worker ${w.id}`, () => {
        const cur = workerRows.get(w.id).dataset.draining === "1";
        act(`${cur ? "Undrain" : "Drain"} ${w.id}`, "POST",
          `/api/admin/workers/${encodeURIComponent(w.id)}/drain`, { drain: !cur });
      }));
      workerRows.set(w.id, tr);
    }
    const info = w.info || {};
    const comfy = info.comfyui || {};
    const up = w.comfyui_up ?? comfy.up;
    const vram = w.vram ?? (info.vram_total_mb ? `${(info.vram_total_mb / 1024).toFixed(1)} GiB` : null);
    const current = w.current_jobs ?? w.jobs ?? [];
    const done = w.jobs_done ?? Array.from(st.jobs.values())
      .filter((j) => j.worker === w.id && j.state === "succeeded").length;
    const lost = w.lost ?? w.state === "lost";
    const idle = current.length ? 0 : w.idle_s;
    const price = w.hourly_eur ?? info.hourly_eur;
    const vals = [w.id, (w.provider ?? info.provider ?? "–") + (typeof price === "number" ? ` (€${price}/h)` : ""),
      w.gpu ?? info.gpu ?? "–", typeof vram === "number" ? `${vram} MB` : vram ?? "–",
      up === undefined ? "–" : up ? "up" : "down", current.length ? current.join(", ") : "idle",
      done, current.length ? "busy" : dur(idle),
      (lost ? "lost" : w.state || "alive") + (w.draining ? ", draining" : "")];
    vals.forEach((v, i) => { if (tr.cells[i].textContent !== String(v)) tr.cells[i].textContent = v; });
    tr.dataset.draining = w.draining ? "1" : "0";
    tr.dataset.state = lost ? "lost" : w.state || "alive";
    const b = tr.cells[9].firstChild;
    b.textContent = w.draining ? "Undrain" : "Drain";
    b.setAttribute("aria-label", `${w.draining ? "stop draining" : "drain"} worker ${w.id}`);
    return tr;
  });
  place($("#workers tbody"), rows);
}

function renderUsers() {
  const tbody = $("#users tbody");
  const push = $("#push-user");
  const chosen = push.value;
  push.replaceChildren(new Option("every participant", ""));
  const rows = st.users.filter((u) => u.role !== "admin").map((u) => {
    const tr = document.createElement("tr");
    tr.dataset.user = u.id;
    const c = cells(tr, 6);
    c[0].textContent = u.id;
    c[1].textContent = u.role;
    c[2].textContent = u.disabled ? "disabled" : "active";
    const limit = (key, label) => {
      const input = document.createElement("input");
      input.type = "number";
      input.min = "0";
      input.inputMode = "numeric";
      input.value = u[key] ?? "";
      input.placeholder = "none";
      input.setAttribute("aria-label", `${label} of ${u.id}`);
      input.dataset.limit = key;
      return input;
    };
    c[3].append(limit("max_running", "running limit"));
    c[4].append(limit("daily_limit", "daily limit"));
    const num = (key) => {
      const v = tr.querySelector(`[data-limit=${key}]`).value.trim();
      return v === "" ? null : Number(v);
    };
    c[5].append(
      button("Save limits", `save limits of ${u.id}`, () =>
        act(`Limits of ${u.id}`, "PUT", `/api/admin/users/${u.id}`,
          { max_running: num("max_running"), daily_limit: num("daily_limit") }).then(loadUsers)),
      button("Reset password", `reset password of ${u.id}`, async () => {
        const r = await api("POST", `/api/admin/users/${u.id}/reset-password`);
        if (r.ok) say(`New password for ${r.data.user}: ${r.data.password}`);
        else say(`Reset password of ${u.id} failed: ${r.error}`, true);
      }),
      button(u.disabled ? "Enable" : "Disable", `${u.disabled ? "enable" : "disable"} ${u.id}`, () =>
        act(`${u.disabled ? "Enable" : "Disable"} ${u.id}`, "PUT", `/api/admin/users/${u.id}`,
          { disabled: !u.disabled }).then(loadUsers)),
    );
    push.append(new Option(u.id, u.id));
    return tr;
  });
  tbody.replaceChildren(...rows);
  push.value = chosen;
}

let modeEdited = false;
/** The queue's mode, unless the organizer is choosing another one right now. */
function showMode(mode) {
  $("#current-mode").textContent = `now: ${mode}`;
  $("#current-mode").dataset.mode = mode;
  if (!modeEdited) $("#mode").value = mode;
}

function setPaused(paused) {
  st.paused = paused;
  $("#pause").textContent = paused ? "Resume queue" : "Pause queue";
  $("#paused-state").textContent = paused ? "Paused: workers take no new jobs" : "";
  document.body.dataset.paused = paused ? "1" : "0";
}

// -- charts (inline SVG) ---------------------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";
function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function charts(minutes) {
  const W = 300, H = 100, top = 12, n = Math.max(minutes.length, 1);
  const bw = W / n;
  const done = $("#chart-done");
  const maxDone = Math.max(1, ...minutes.map((m) => m.done || 0));
  const bars = minutes.map((m, i) => {
    const h = ((m.done || 0) / maxDone) * (H - top);
    return svgEl("rect", { x: i * bw, y: H - h, width: Math.max(bw - 0.5, 0.5), height: h, class: "bar" },
      undefined);
  });
  done.replaceChildren(svgEl("text", { x: 2, y: 10, class: "label" }, `max ${maxDone}/min`), ...bars);
  const wait = $("#chart-wait");
  const maxWait = Math.max(1, ...minutes.map((m) => m.wait_s_max || 0));
  const line = (key, cls) => {
    const pts = minutes.map((m, i) => (m[key] === null || m[key] === undefined ? null
      : `${(i + 0.5) * bw},${H - (m[key] / maxWait) * (H - top)}`)).filter(Boolean);
    return svgEl("polyline", { points: pts.join(" "), class: cls, fill: "none" });
  };
  wait.replaceChildren(svgEl("text", { x: 2, y: 10, class: "label" }, `max ${maxWait.toFixed(0)} s`),
    line("wait_s_max", "line-max"), line("wait_s_p50", "line-p50"));
  done.dataset.points = String(minutes.length);
}

// -- actions ---------------------------------------------------------------------------------
async function credentialsSheet() {
  if (!confirm("This issues FRESH passwords for every participant; their old passwords stop working. Continue?")) return;
  say("Issuing fresh passwords…");
  const r = await api("POST", "/api/admin/credentials", {});
  if (!r.ok) { say(`Credentials sheet failed: ${r.error}`, true); return; }
  const esc = (s) => String(s).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
  const cards = r.data.users.map((u) => {
    const url = new URL(u.url_path, location.origin).href;
    return `<article class="card"><h2>${esc(u.user)}</h2><p>Open <strong>${esc(url)}</strong></p>` +
      `<p>Name: <code>${esc(u.user)}</code><br>Password: <code>${esc(u.password)}</code></p></article>`;
  }).join("\n");
  const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Workshop credentials</title>
<style>body{font:14px system-ui,sans-serif;margin:1cm}.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(8cm,1fr));gap:.5cm}
.card{border:1px dashed #444;padding:.4cm;break-inside:avoid}h2{margin:0 0 .2cm}code{font-size:16px}
@media print{.noprint{display:none}body{margin:0}}</style></head><body>
<p class="noprint">${r.data.users.length} cards. These passwords were just issued; earlier ones no longer work. <button onclick="print()">Print</button></p>
<div class="cards">${cards}</div></body></html>`;
  const url = URL.createObjectURL(new Blob([html], { type: "text/html" }));
  const link = document.createElement("a");
  link.href = url;
  link.target = "_blank";
  link.id = "sheet-link";
  link.textContent = `Open the credentials sheet (${r.data.users.length} cards)`;
  const msg = $("#action-msg");
  msg.classList.remove("error");
  msg.replaceChildren("Fresh passwords issued. ", link);
  window.open(url, "_blank");
}

async function pushWorkflow(ev) {
  ev.preventDefault();
  const file = $("#push-file").files[0];
  if (!file) { say("Choose a workflow file first.", true); return; }
  let workflow;
  try {
    workflow = JSON.parse(await file.text());
  } catch (err) {
    say(`${file.name} is not JSON: ${err.message}`, true);
    return;
  }
  if (!workflow || typeof workflow !== "object" || Array.isArray(workflow)) {
    say(`${file.name} does not hold a workflow (a JSON object).`, true);
    return;
  }
  const user = $("#push-user").value || null;
  const r = await api("POST", "/api/admin/push-workflow", { workflow, user });
  if (r.ok) say(`Pushed ${file.name} to ${user || "every participant"}.`);
  else say(`Push failed: ${r.error}`, true);
}

async function addUser(ev) {
  ev.preventDefault();
  const id = $("#add-id").value.trim();
  const r = await act(`Add ${id}`, "PUT", `/api/admin/users/${encodeURIComponent(id)}`,
    { password: $("#add-password").value, role: $("#add-role").value });
  if (r.ok) { $("#add-id").value = ""; $("#add-password").value = ""; await loadUsers(); }
}

// -- wiring ----------------------------------------------------------------------------------
$("#login-form").addEventListener("submit", login);
$("#logout").addEventListener("click", () => signOut());
$("#mode").addEventListener("change", () => { modeEdited = true; });
$("#mode-apply").addEventListener("click", async () => {
  const r = await act(`Mode ${$("#mode").value}`, "PUT", "/api/admin/mode", { mode: $("#mode").value });
  if (r.ok) { modeEdited = false; showMode(r.data.mode); }
});
$("#pause").addEventListener("click", () =>
  act(st.paused ? "Resume" : "Pause", "POST", `/api/admin/queue/${st.paused ? "resume" : "pause"}`)
    .then((r) => { if (r.ok && r.data && "paused" in r.data) setPaused(r.data.paused); }));
$("#credentials").addEventListener("click", credentialsSheet);
$("#push").addEventListener("submit", pushWorkflow);
$("#add-user").addEventListener("submit", addUser);

if (st.token) {
  checkToken().then((ok) => (ok ? start() : signOut()));
}
