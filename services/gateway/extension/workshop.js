// The workshop's frontend extension, served by the gateway through /extensions.
//
// - Shows each participant their place in the shared queue and when their job should start
//   (ComfyUI's own UI only counts the participant's own queue), live, and says plainly when
//   no GPU worker is connected.
// - Loads a workflow the instructor pushed (WebSocket message `workshop.push_workflow`) onto
//   the canvas: UI format with app.loadGraphData, API format with app.loadApiJson.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const BUSY_POLL_MS = 2000; // while the participant has jobs waiting or running
const IDLE_POLL_MS = 10000;

function badge() {
  let el = document.getElementById("workshop-queue");
  if (!el) {
    el = document.createElement("div");
    el.id = "workshop-queue";
    el.setAttribute("role", "status");
    Object.assign(el.style, {
      position: "fixed", right: "12px", bottom: "12px", zIndex: 1000,
      padding: "6px 10px", borderRadius: "6px", font: "13px sans-serif",
      background: "rgba(20,20,20,0.85)", color: "#eee", pointerEvents: "none",
      maxWidth: "340px", display: "none",
    });
    document.body.appendChild(el);
  }
  return el;
}

function minutes(seconds) {
  if (seconds < 60) return "under a minute";
  const m = Math.round(seconds / 60);
  return m === 1 ? "about 1 minute" : `about ${m} minutes`;
}

export function describe(place) {
  if (!place) return "";
  const waiting = place.jobs.filter((j) => j.state === "queued");
  const running = place.jobs.filter((j) => j.state !== "queued");
  if (place.workers_alive === 0) {
    const tail = waiting.length ? ` Your ${waiting.length} job(s) wait until one is.` : "";
    return `No GPU worker is connected right now.${tail}`;
  }
  const parts = [];
  if (running.length) parts.push(running.length === 1 ? "Your job is running." : `${running.length} of your jobs are running.`);
  if (waiting.length) {
    const next = waiting.reduce((a, b) => ((a.position ?? 1e9) <= (b.position ?? 1e9) ? a : b));
    let line = `Your next job is #${next.position} in the shared queue (${place.queued_total} waiting)`;
    if (next.starts_in_s !== undefined) line += `, starts in ${minutes(next.starts_in_s)}`;
    parts.push(line + ".");
  }
  return parts.join(" ");
}

// One polling chain per page: a `status` message asks for a refresh now, which replaces the
// pending timer instead of starting another chain (each would poll on forever).
let timer = null;
let inFlight = false;
let again = false; // a status message came while a refresh was in flight

function refreshSoon(delayMs) {
  clearTimeout(timer);
  timer = setTimeout(refresh, delayMs);
}

async function refresh() {
  if (inFlight) {
    again = true; // the running refresh looks again as soon as it ends
    return;
  }
  inFlight = true;
  let place = null;
  try {
    const res = await api.fetchApi("/workshop/queue", { cache: "no-store" });
    if (res.ok) place = await res.json();
  } catch (e) {
    // the gateway is restarting: try again on the next tick
  }
  const el = badge();
  const text = describe(place);
  el.textContent = text;
  el.style.display = text ? "block" : "none";
  const busy = place && place.jobs.length > 0;
  inFlight = false;
  refreshSoon(again ? 0 : busy ? BUSY_POLL_MS : IDLE_POLL_MS);
  again = false;
}

function isUiFormat(workflow) {
  return workflow && Array.isArray(workflow.nodes) && Array.isArray(workflow.links);
}

async function loadPushed(event) {
  const workflow = event.detail && event.detail.workflow;
  if (!workflow || typeof workflow !== "object") return;
  if (isUiFormat(workflow)) {
    await app.loadGraphData(workflow);
  } else {
    await app.loadApiJson(workflow, "workshop.json");
  }
}

app.registerExtension({
  name: "workshop.queue",
  async setup() {
    api.addEventListener("workshop.push_workflow", loadPushed);
    // The queue's place changes when other participants' jobs start: ask, don't wait.
    api.addEventListener("status", () => refreshSoon(0));
    refresh();
  },
});
