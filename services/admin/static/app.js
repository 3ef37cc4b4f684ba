// The organizer's cockpit: signs in as an admin, loads the admin API, then stays live over
// /api/events (resuming with ?since= after a drop). No build step, no libraries: the DOM is
// updated in place (rows keyed by job, worker and user) so keyboard focus and half-typed
// limits survive updates.

import { api, detail, session } from "./api.js";
import { throughputChart, waitChart } from "./charts.js";
import { dur, etaText, eur, shortId } from "./format.js";

const $ = (sel) => document.querySelector(sel);
const LIVE = ["queued", "leased", "running"];
const FINAL = ["succeeded", "failed", "cancelled"];
const STATE_EVENTS = new Set([...LIVE, ...FINAL, "requeued", "cancel_requested", "declined", "bumped"]);
const KEEP_FINISHED = 10;
/** Workers' health lines come with their heartbeats, which send no event: look again. */
const CORE_POLL_MS = 3000;
const SLOW_POLL_MS = 10000;

const st = {
  jobs: new Map(),
  workers: [],
  users: [],
  cost: new Map(),
  lastEvent: null,
  ws: null,
  wsDelay: 1000,
  timers: [],
  paused: false,
  /** Passwords this page was shown (add, reset, a fresh sheet): for a sheet without reset. */
  issued: new Map(),
};

function say(text, bad = false) {
  const el = $("#action-msg");
  el.textContent = text;
  el.classList.toggle("error", bad);
}

/** Show a password once, in its own box, until hidden or replaced. */
function showSecret(what, password) {
  $("#secret-text").textContent = what;
  $("#secret-value").textContent = password;
  $("#secret").hidden = false;
}

async function act(what, method, path, body) {
  const r = await api(method, path, body);
  if (r.ok) say(`${what}: done`);
  else say(`${what} failed: ${r.error}`, true);
  core.soon(0);
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
  session.set(data.access_token);
  await start();
}

async function checkToken() {
  const r = await fetch("/api/me", { headers: { Authorization: `Bearer ${session.token}` } });
  const me = r.ok ? await r.json() : null;
  return me && me.role === "admin";
}

function signOut(message = "") {
  session.set(null);
  if (st.ws) { st.ws.onclose = null; st.ws.close(); st.ws = null; }
  st.timers.forEach(clearInterval);
  st.timers = [];
  st.issued.clear();
  $("#secret").hidden = true;
  $("#dash").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#live").textContent = "signed out";
  $("#live").dataset.live = "0";
  $("#login-error").textContent = message;
}
session.onUnauthorized(() => signOut("Your session ended: sign in again."));

async function start() {
  $("#login").hidden = true;
  $("#dash").hidden = false;
  $("#logout").hidden = false;
  connect();
  await Promise.all([refreshCore(), refreshSlow()]);
  st.timers.push(setInterval(renderTimes, 1000));
  st.timers.push(setInterval(() => core.soon(0), CORE_POLL_MS));
  st.timers.push(setInterval(() => slow.soon(0), SLOW_POLL_MS));
}

// -- live events -----------------------------------------------------------------------------
function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const q = new URLSearchParams({ token: session.token });
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
    setTimeout(() => { if (session.token && st.ws === ws) { connect(); core.soon(0); } }, st.wsDelay);
    st.wsDelay = Math.min(st.wsDelay * 2, 10000);
  };
}

const eventMs = (id) => Number(String(id).split("-")[0]);

function onEvent(e) {
  st.lastEvent = e.id;
  const at = eventMs(e.id);
  if (e.type === "mode") { if (e.data && e.data.mode) showMode(e.data.mode); return; }
  if (e.type === "queue") { setPaused(Boolean(e.data && e.data.paused)); return; }
  if (e.type === "worker") { core.soon(0); return; }
  if (e.type === "limits") { slow.soon(0); return; }
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
  // The backlog's ETA, usage and the charts move with submits and ends (coalesced: ~1/s).
  if (e.type === "queued" || FINAL.includes(e.type)) slow.soon(1000);
  renderSoon();
  if (STATE_EVENTS.has(e.type)) core.soon(300);
}

// -- loading ---------------------------------------------------------------------------------
/** A refresh that runs at most once at a time and coalesces the calls made meanwhile. */
function coalesced(load) {
  let timer = null, running = false, again = false;
  const self = {
    soon(delay = 300) {
      if (timer !== null) return;
      timer = setTimeout(async () => {
        timer = null;
        if (running) { again = true; return; }
        running = true;
        try { await load(); } finally { running = false; }
        if (again) { again = false; self.soon(300); }
      }, delay);
    },
  };
  return self;
}

async function refreshCore() {
  if (!session.token) return;
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
    $("#n-workers").textContent = `${ov.data.workers_alive} / ${ov.data.workers_lost}`;
    if ("paused" in ov.data) setPaused(ov.data.paused);
  }
  if (jobs.ok) mergeJobs(jobs.data, asOf);
  if (workers.ok) st.workers = workers.data;
  renderSoon();
}
const core = coalesced(refreshCore);

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
  if (!session.token) return;
  const [users, stats, cost, eta] = await Promise.all([
    api("GET", "/api/admin/users"),
    api("GET", "/api/admin/stats"),
    api("GET", "/api/admin/cost"),
    api("GET", "/api/admin/eta"),
  ]);
  if (users.ok) { st.users = users.data; renderUsers(); }
  $("#cost-total").textContent = cost.ok ? eur(cost.data.total_eur) : "n/a";
  $("#cost-hour").textContent = cost.ok ? eur(cost.data.per_hour_eur) : "n/a";
  if (cost.ok) st.cost = new Map(cost.data.workers.map((w) => [w.id, w]));
  if (eta.ok) {
    const e = eta.data;
    $("#eta-now").textContent = etaText(e.clears_in_s, e.backlog);
    $("#eta-now").dataset.backlog = String(e.backlog);
    $("#eta-plus").textContent = etaText(e.clears_in_s_with_one_more, e.backlog);
    $("#eta-note").textContent = e.backlog
      ? `${e.backlog} queued, ${e.workers} worker(s) leasing, a job takes about ${dur(e.job_s)} of GPU.`
      : "";
  } else {
    $("#eta-now").textContent = $("#eta-plus").textContent = "n/a";
  }
  if (stats.ok) {
    throughputChart($("#chart-done"), stats.data.throughput || []);
    waitChart($("#chart-wait"), stats.data.wait_s || []);
  }
  renderSoon();
}
const slow = coalesced(refreshSlow);

// -- rendering -------------------------------------------------------------------------------
let renderQueued = false;
function renderSoon() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; renderTimes(); });
}

function renderTimes() { renderJobs(); renderByUser(); renderWorkers(); }

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

function setText(cell, v) {
  const s = String(v);
  if (cell.textContent !== s) cell.textContent = s;
}

/** Put `rows` into tbody in that order, moving nodes only when needed (focus survives). */
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
  const ids = new Set(shown.map((j) => j.id));
  for (const id of jobRows.keys()) if (!ids.has(id)) jobRows.delete(id);
  place($("#jobs tbody"), rows);
}

/** Columns: job, participant, state, actions, progress, position, waiting, running, worker
 * (the actions early: on a phone they are in view without scrolling the table). */
function jobRow(j, now) {
  let tr = jobRows.get(j.id);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.job = j.id;
    const c = cells(tr, 9);
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = 0;
    bar.setAttribute("aria-label", `progress of job ${j.id}`);
    c[4].append(bar);
    c[3].append(
      button("Bump", `bump job ${j.id} to the front`, () =>
        act(`Bump ${shortId(j.id)}`, "POST", `/api/admin/jobs/${encodeURIComponent(j.id)}/bump`)),
      button("Cancel", `cancel job ${j.id}`, () =>
        act(`Cancel ${shortId(j.id)}`, "POST", `/api/jobs/${encodeURIComponent(j.id)}/cancel`)),
    );
    jobRows.set(j.id, tr);
  }
  const c = tr.cells;
  tr.dataset.state = j.state;
  setText(c[0], shortId(j.id));
  c[0].title = j.id;
  setText(c[1], j.user);
  setText(c[2], j.cancel_requested && LIVE.includes(j.state) ? `${j.state} (cancelling)` : j.state);
  setText(c[5], j.state === "queued" && j.position ? j.position : "–");
  setText(c[6], dur(waitS(j, now)));
  setText(c[7], dur(runS(j, now)));
  const bar = c[4].firstChild;
  const p = j.progress;
  const frac = j.state === "succeeded" ? 1 : p && p.max ? Math.min(1, p.value / p.max) : 0;
  if (bar.value !== frac) bar.value = frac;
  bar.dataset.value = frac.toFixed(3);
  bar.title = p && p.max ? `${p.value} / ${p.max}` : "";
  setText(c[8], j.worker || "–");
  const live = LIVE.includes(j.state);
  const [bump, cancel] = c[3].querySelectorAll("button");
  bump.disabled = j.state !== "queued";
  cancel.disabled = !live;
  return tr;
}

const byUserRows = new Map();
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
  const usage = new Map(st.users.map((u) => [u.id, u.usage || {}]));
  for (const [u, use] of usage) if (use.jobs) row(u);
  const names = Array.from(agg.keys()).sort();
  const rows = names.map((u) => {
    let tr = byUserRows.get(u);
    if (!tr) { tr = document.createElement("tr"); tr.dataset.user = u; cells(tr, 7); byUserRows.set(u, tr); }
    const a = agg.get(u), use = usage.get(u) || {};
    const vals = [u, a.queued, a.running, dur(a.wait), use.jobs_today ?? "–", use.jobs ?? "–",
      typeof use.gpu_s === "number" ? use.gpu_s.toFixed(1) : "–"];
    vals.forEach((v, i) => setText(tr.cells[i], v));
    return tr;
  });
  place($("#by-user tbody"), rows);
}

/** When a worker last finished a job this page knows of (else when it registered). */
function lastBusy(w) {
  let t = w.registered_at || null;
  for (const j of st.jobs.values()) {
    if (j.worker === w.id && j.finished_at && (t === null || j.finished_at > t)) t = j.finished_at;
  }
  return t;
}

const workerRows = new Map();
function renderWorkers() {
  const now = Date.now();
  const rows = st.workers.map((w) => {
    let tr = workerRows.get(w.id);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.worker = w.id;
      cells(tr, 11);
      tr.cells[10].append(button("Drain", `drain worker ${w.id}`, () => {
        const draining = workerRows.get(w.id).dataset.draining === "1";
        act(`${draining ? "Undrain" : "Drain"} ${w.id}`, "POST",
          `/api/admin/workers/${encodeURIComponent(w.id)}/${draining ? "undrain" : "drain"}`);
      }));
      workerRows.set(w.id, tr);
    }
    const info = w.info || {};
    const health = w.status || {};
    const lost = w.state === "lost";
    const up = health.comfyui ? health.comfyui === "up" : info.comfyui ? info.comfyui.up : undefined;
    const current = health.job || (w.jobs && w.jobs[0]) || null;
    const state = lost ? "lost" : health.state || "alive";
    const cost = st.cost.get(w.id);
    const since = lastBusy(w);
    const idle = !lost && state === "idle" && since ? (now - since) / 1000 : null;
    const price = typeof info.hourly_eur === "number" ? ` (€${info.hourly_eur}/h)` : "";
    const vals = [
      w.id, (info.provider ?? "–") + price, info.gpu ?? "–",
      typeof info.vram_total_mb === "number" ? `${(info.vram_total_mb / 1024).toFixed(1)} GiB` : "–",
      up === undefined ? "–" : up ? "up" : "down",
      current ? shortId(current) + (w.jobs && w.jobs.length > 1 ? ` (+${w.jobs.length - 1} held)` : "") : "none",
      health.jobs_done ?? "–", state === "idle" ? dur(idle) : "–", cost ? eur(cost.eur) : "–",
      state + (w.draining && state !== "draining" ? ", draining" : ""),
    ];
    vals.forEach((v, i) => setText(tr.cells[i], v));
    tr.cells[4].title = health.comfyui_reason || "";
    tr.cells[5].title = current || "";
    tr.dataset.draining = w.draining ? "1" : "0";
    tr.dataset.state = state;
    tr.dataset.comfyui = up === undefined ? "" : up ? "up" : "down";
    tr.dataset.job = current || "";
    tr.dataset.jobsDone = String(health.jobs_done ?? "");
    const b = tr.cells[10].firstChild;
    b.textContent = w.draining ? "Undrain" : "Drain";
    b.setAttribute("aria-label", `${w.draining ? "undrain" : "drain"} worker ${w.id}`);
    return tr;
  });
  place($("#workers tbody"), rows);
}

// -- participants ----------------------------------------------------------------------------
const userRows = new Map();

function limitInput(uid, key, label) {
  const input = document.createElement("input");
  input.type = "number";
  input.min = key === "running" ? "1" : "0";
  input.inputMode = "numeric";
  input.placeholder = key === "running" ? "default" : "none";
  input.setAttribute("aria-label", `${label} of ${uid}`);
  input.dataset.limit = key;
  input.addEventListener("input", () => { input.dataset.dirty = "1"; });
  return input;
}

function userRow(u) {
  let tr = userRows.get(u.id);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.user = u.id;
    const c = cells(tr, 6);
    c[3].append(limitInput(u.id, "running", "running limit"));
    c[4].append(limitInput(u.id, "daily", "daily limit"));
    const num = (key) => {
      const v = tr.querySelector(`[data-limit=${key}]`).value.trim();
      return v === "" ? null : Number(v);
    };
    c[5].append(
      button("Save limits", `save limits of ${u.id}`, async () => {
        const r = await act(`Limits of ${u.id}`, "PUT", `/api/admin/users/${encodeURIComponent(u.id)}/limits`,
          { running: num("running"), daily: num("daily") });
        if (r.ok) {
          tr.querySelectorAll("[data-limit]").forEach((i) => { delete i.dataset.dirty; });
          slow.soon(0);
        }
      }),
      button("Reset password", `reset password of ${u.id}`, async () => {
        const r = await api("POST", `/api/admin/users/${encodeURIComponent(u.id)}/reset-password`,
          { password: null });
        if (r.ok) {
          st.issued.set(r.data.id, r.data.password);
          say(`Password of ${r.data.id} reset; their sessions ended.`);
          showSecret(`New password for ${r.data.id}:`, r.data.password);
        } else say(`Reset password of ${u.id} failed: ${r.error}`, true);
      }),
      button("Disable", `disable ${u.id}`, async () => {
        const off = tr.dataset.disabled === "1";
        const r = await act(`${off ? "Enable" : "Disable"} ${u.id}`, "POST",
          `/api/admin/users/${encodeURIComponent(u.id)}/${off ? "enable" : "disable"}`);
        if (r.ok) { st.users = st.users.map((x) => (x.id === u.id ? r.data : x)); renderUsers(); }
      }),
    );
    userRows.set(u.id, tr);
  }
  const c = tr.cells;
  setText(c[0], u.id);
  setText(c[1], u.role);
  setText(c[2], u.disabled ? "disabled" : "active");
  tr.dataset.disabled = u.disabled ? "1" : "0";
  const limits = u.limits || {};
  for (const input of tr.querySelectorAll("[data-limit]")) {
    if (input.dataset.dirty || document.activeElement === input) continue;
    const v = limits[input.dataset.limit];
    input.value = v === null || v === undefined ? "" : String(v);
  }
  const toggle = c[5].querySelectorAll("button")[2];
  toggle.textContent = u.disabled ? "Enable" : "Disable";
  toggle.setAttribute("aria-label", `${u.disabled ? "enable" : "disable"} ${u.id}`);
  return tr;
}

function fillUserSelect(select, users) {
  const chosen = select.value;
  const want = ["", ...users.map((u) => u.id)];
  const have = Array.from(select.options).map((o) => o.value);
  if (want.join("\n") === have.join("\n")) return;
  select.replaceChildren(new Option("every participant", ""), ...users.map((u) => new Option(u.id, u.id)));
  select.value = want.includes(chosen) ? chosen : "";
}

function renderUsers() {
  const people = st.users.filter((u) => u.role !== "admin");
  const ids = new Set(people.map((u) => u.id));
  for (const id of userRows.keys()) if (!ids.has(id)) userRows.delete(id);
  place($("#users tbody"), people.map(userRow));
  const participants = people.filter((u) => u.role === "participant");
  fillUserSelect($("#push-user"), participants);
  fillUserSelect($("#sheet-user"), participants);
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

// -- actions ---------------------------------------------------------------------------------
async function addUser(ev) {
  ev.preventDefault();
  const id = $("#add-id").value.trim();
  const password = $("#add-password").value || null;
  const r = await api("POST", "/api/admin/users", { id, role: $("#add-role").value, password });
  if (!r.ok) { say(`Add ${id} failed: ${r.error}`, true); return; }
  st.issued.set(r.data.id, r.data.password);
  $("#add-id").value = "";
  $("#add-password").value = "";
  say(`Added ${r.data.role} ${r.data.id}.`);
  showSecret(`Password for ${r.data.id}:`, r.data.password);
  slow.soon(0);
}

/** The printable sheet in a new tab. The tab is opened within the click (no popup block),
 * then given the queue's HTML. */
async function credentialsSheet(ev) {
  ev.preventDefault();
  const user = $("#sheet-user").value;
  const reset = $("#sheet-passwords").value === "reset";
  const users = user ? [user] : null;
  const body = { users, reset, passwords: null };
  if (!reset) {
    const want = user ? [user] : st.users.filter((u) => u.role === "participant").map((u) => u.id);
    const known = want.filter((u) => st.issued.has(u));
    if (!known.length) {
      say("This page has shown no participant's password yet: choose “issue fresh ones”.", true);
      return;
    }
    body.users = known;
    body.passwords = Object.fromEntries(known.map((u) => [u, st.issued.get(u)]));
  } else {
    const who = user || "every participant";
    if (!confirm(`Issue fresh passwords for ${who}? Their old passwords stop working.`)) return;
  }
  const tab = window.open("", "_blank");
  say("Making the credentials sheet…");
  const r = await api("POST", "/api/admin/credentials-sheet", body, { raw: true });
  if (!r.ok) {
    if (tab) tab.close();
    say(`Credentials sheet failed: ${r.error}`, true);
    return;
  }
  const url = URL.createObjectURL(new Blob([r.data], { type: "text/html" }));
  if (tab) tab.location.href = url;
  const link = document.createElement("a");
  link.href = url;
  link.target = "_blank";
  link.id = "sheet-link";
  link.textContent = "open the credentials sheet again";
  const msg = $("#action-msg");
  msg.classList.remove("error");
  msg.replaceChildren(reset ? "Fresh passwords issued; the sheet is in a new tab (" : "The sheet is in a new tab (",
    link, ").");
}

async function pushWorkflow(ev) {
  ev.preventDefault();
  const file = $("#push-file").files[0];
  const pasted = $("#push-text").value.trim();
  const name = file ? file.name : "the pasted workflow";
  if (!file && !pasted) { say("Choose a workflow file or paste its JSON first.", true); return; }
  let workflow;
  try {
    workflow = JSON.parse(file ? await file.text() : pasted);
  } catch (err) {
    say(`${name} is not JSON: ${err.message}`, true);
    return;
  }
  if (!workflow || typeof workflow !== "object" || Array.isArray(workflow)) {
    say(`${name} does not hold a workflow (a JSON object).`, true);
    return;
  }
  const user = $("#push-user").value || null;
  const r = await api("POST", "/api/admin/push-workflow", { workflow, user });
  if (r.ok) say(`Pushed ${name} to ${user || "every participant"}.`);
  else say(`Push failed: ${r.error}`, true);
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
$("#secret-hide").addEventListener("click", () => {
  $("#secret").hidden = true;
  $("#secret-value").textContent = "";
});
$("#sheet").addEventListener("submit", credentialsSheet);
$("#push").addEventListener("submit", pushWorkflow);
$("#add-user").addEventListener("submit", addUser);

if (session.token) {
  checkToken().then((ok) => (ok ? start() : signOut()));
}
