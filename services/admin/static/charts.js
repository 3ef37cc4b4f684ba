// The last hour as inline SVG (no chart library): finished jobs per minute as stacked bars,
// queue waits per minute as two lines. Each chart also says its figures in words (aria-label).

const SVG = "http://www.w3.org/2000/svg";
const W = 300, H = 110, TOP = 12, BOTTOM = 12, CHART_H = H - TOP - BOTTOM;

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function axis(n) {
  return [
    el("line", { x1: 0, y1: H - BOTTOM, x2: W, y2: H - BOTTOM, class: "axis" }),
    el("text", { x: 2, y: H - 2, class: "label" }, `−${n} min`),
    el("text", { x: W - 2, y: H - 2, class: "label", "text-anchor": "end" }, "now"),
  ];
}

/** throughput: [{t, done, failed}] oldest first. */
export function throughputChart(svg, points) {
  const n = Math.max(points.length, 1), bw = W / n;
  const top = Math.max(1, ...points.map((p) => (p.done || 0) + (p.failed || 0)));
  const y = (v) => (v / top) * CHART_H;
  const bars = [];
  points.forEach((p, i) => {
    const hd = y(p.done || 0), hf = y(p.failed || 0);
    const x = i * bw, w = Math.max(bw - 0.5, 0.5);
    if (hd) bars.push(el("rect", { x, y: H - BOTTOM - hd, width: w, height: hd, class: "bar" }));
    if (hf) bars.push(el("rect", { x, y: H - BOTTOM - hd - hf, width: w, height: hf, class: "bar-failed" }));
  });
  const done = points.reduce((a, p) => a + (p.done || 0), 0);
  const failed = points.reduce((a, p) => a + (p.failed || 0), 0);
  svg.replaceChildren(el("text", { x: 2, y: 9, class: "label" }, `top ${top}/min`), ...bars, ...axis(n));
  svg.setAttribute("aria-label",
    `Last hour: ${done} jobs succeeded, ${failed} failed; at most ${top} in one minute.`);
  svg.dataset.done = String(done);
  svg.dataset.points = String(points.length);
}

/** waits: [{t, p50, max}] (seconds, null for a minute without leases) oldest first. */
export function waitChart(svg, points) {
  const n = Math.max(points.length, 1), bw = W / n;
  const top = Math.max(1, ...points.map((p) => p.max || 0));
  const line = (key, cls) => {
    const pts = points.map((p, i) => (p[key] === null || p[key] === undefined ? null
      : `${((i + 0.5) * bw).toFixed(1)},${(H - BOTTOM - (p[key] / top) * CHART_H).toFixed(1)}`))
      .filter(Boolean);
    return el("polyline", { points: pts.join(" "), class: cls, fill: "none" });
  };
  // A minute alone draws no line: each point also gets a dot.
  const dots = [];
  points.forEach((p, i) => {
    for (const [key, cls] of [["max", "dot-max"], ["p50", "dot-p50"]]) {
      if (typeof p[key] !== "number") continue;
      dots.push(el("circle", { cx: ((i + 0.5) * bw).toFixed(1),
        cy: (H - BOTTOM - (p[key] / top) * CHART_H).toFixed(1), r: 1.6, class: cls }));
    }
  });
  const medians = points.map((p) => p.p50).filter((v) => typeof v === "number");
  const last = medians.length ? medians[medians.length - 1] : null;
  svg.replaceChildren(el("text", { x: 2, y: 9, class: "label" }, `top ${top.toFixed(0)} s`),
    line("max", "line-max"), line("p50", "line-p50"), ...dots, ...axis(n));
  svg.setAttribute("aria-label", last === null ? "No job was leased in the last hour."
    : `Queue wait: latest median ${last.toFixed(1)} s; longest in the hour ${top.toFixed(0)} s.`);
}
