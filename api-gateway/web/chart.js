// The dashboard's chart of live sessions over the last 15 minutes: an
// inline SVG step line, drawn from samples of the session count.

const WINDOW_MS = 15 * 60 * 1000;
const SVG_NS = "http://www.w3.org/2000/svg";

export class LiveChart {
  constructor(svg) {
    this.svg = svg;
    this.series = []; // {t, v}: the live count v at time t, oldest first
  }

  // sample records the count now.
  sample(count) {
    const now = Date.now();
    this.series.push({ t: now, v: count });
    const cutoff = now - WINDOW_MS - 60000;
    while (this.series.length > 2 && this.series[1].t < cutoff) this.series.shift();
  }

  // backfill rebuilds the past from replayed events: walking back from the
  // current count, each creating added a session and each end removed one.
  backfill(count, events) {
    const past = [];
    for (let i = events.length - 1; i >= 0; i--) {
      const ev = events[i];
      past.push({ t: Date.parse(ev.time), v: count });
      if (ev.type === "creating") count = Math.max(0, count - 1);
      if (ev.type === "failed" || (ev.type === "terminated" && ev.reason !== "orphaned")) count++;
    }
    const t0 = Date.now() - WINDOW_MS;
    if (!past.length || past[past.length - 1].t > t0) past.push({ t: t0, v: count });
    past.sort((p, q) => p.t - q.t);
    const first = this.series.length ? this.series[0].t : Infinity;
    this.series = past.filter((p) => p.t < first).concat(this.series);
    this.draw();
  }

  draw() {
    const svg = this.svg;
    const W = svg.clientWidth || 640, H = svg.clientHeight || 180;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const padL = 30, padR = 8, padT = 10, padB = 22;
    const now = Date.now(), t0 = now - WINDOW_MS;
    const pts = this.series.filter((p) => p.t >= t0 - 60000);
    let before = null;
    for (const p of this.series) if (p.t < t0) before = p;
    const top = niceMax(Math.max(2, ...pts.map((p) => p.v), before ? before.v : 0));
    const x = (t) => padL + ((Math.max(t, t0) - t0) / WINDOW_MS) * (W - padL - padR);
    const y = (v) => padT + (1 - v / top) * (H - padT - padB);

    const nodes = [];
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      nodes.push(svgEl("line", { class: "grid", x1: padL, x2: W - padR, y1: y(v), y2: y(v) }));
      nodes.push(svgText(Number.isInteger(v) ? v : v.toFixed(1), { x: padL - 6, y: y(v) + 4, "text-anchor": "end" }));
    }
    for (const [m, text] of [[15, "−15m"], [10, "−10m"], [5, "−5m"], [0, "now"]]) {
      const anchor = m === 15 ? "start" : m === 0 ? "end" : "middle";
      nodes.push(svgText(text, { x: x(now - m * 60000), y: H - 4, "text-anchor": anchor }));
    }
    // Counts change in steps, so the line holds each value until the next.
    let last = before ? before.v : (pts.length ? pts[0].v : 0);
    const seq = [[x(t0), y(last)]];
    for (const p of pts) {
      if (p.t < t0) { last = p.v; seq[0][1] = y(last); continue; }
      seq.push([x(p.t), y(last)], [x(p.t), y(p.v)]);
      last = p.v;
    }
    seq.push([x(now), y(last)]);
    const line = seq.map(([px, py], i) => (i ? "L" : "M") + px.toFixed(1) + " " + py.toFixed(1)).join(" ");
    const area = line + ` L ${x(now).toFixed(1)} ${y(0)} L ${x(t0).toFixed(1)} ${y(0)} Z`;
    nodes.push(svgEl("path", { class: "area", d: area }));
    nodes.push(svgEl("path", { class: "line", d: line }));
    nodes.push(svgEl("circle", { class: "now", cx: x(now), cy: y(last), r: 4 }));
    svg.replaceChildren(...nodes);
  }
}

function niceMax(v) {
  for (const step of [2, 4, 8, 10, 20, 40, 50, 100, 200, 400, 500, 1000, 2000, 5000, 10000]) if (v <= step) return step;
  return Math.ceil(v / 10000) * 10000;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function svgText(text, attrs) {
  const e = svgEl("text", Object.assign({ class: "axis" }, attrs));
  e.textContent = text;
  return e;
}
