// How durations, money and ids read on the page.

export function dur(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "–";
  s = Math.max(0, s);
  if (s < 10 && s !== Math.round(s)) return `${s.toFixed(1)} s`;
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export const eur = (x) => (typeof x === "number" ? `€${x.toFixed(2)}` : "–");

export const shortId = (id) => (id && id.length > 12 ? `${id.slice(0, 8)}…` : id || "–");

export function etaText(s, backlog) {
  if (backlog === 0) return "nothing waiting";
  return s === null || s === undefined ? "no estimate yet" : dur(s);
}
