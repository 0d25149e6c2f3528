// Charts drawn as SVG by hand: stacked bars and lines over a series of points. Colours come
// from CSS classes (style.css), never inline styles, which the page's CSP forbids.

import { h } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 1000;
const HEIGHT = 220;
const PAD = { left: 70, right: 12, top: 10, bottom: 24 };
const LABELS = 6; // x-axis labels at most

// An SVG element, as `h` builds HTML ones (text children only: no markup from data).
export function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined && value !== false) element.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined && child !== false) element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

// The smallest 1, 2 or 5 times a power of ten at or above `value` (1 for nothing).
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((step) => step * power).find((nice) => nice >= value);
}

// The frame: y-axis gridlines with their values, and up to LABELS x-axis labels.
function frame(labels, top, format) {
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const grid = [0, 0.5, 1].map((share) => {
    const y = PAD.top + plotHeight * (1 - share);
    return svg(
      "g",
      { class: "grid" },
      svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y }),
      svg("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end" }, format(top * share)),
    );
  });
  const every = Math.max(1, Math.ceil(labels.length / LABELS));
  const slot = (WIDTH - PAD.left - PAD.right) / Math.max(1, labels.length);
  const ticks = labels.map((label, index) =>
    index % every ? null : svg("text", { class: "tick", x: PAD.left + slot * (index + 0.5), y: HEIGHT - 6, "text-anchor": "middle" }, label),
  );
  return [grid, ticks];
}

function chart(id, title, children) {
  return svg("svg", { id, class: "chart", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": title }, svg("title", {}, title), children);
}

// Bars of `points` ({label, values: {key: number}, title}), each stacked in the order of
// `keys`; each segment carries data-key and data-value, and a tooltip.
export function stackedBars({ id, title, points, keys, fillOf, format = String }) {
  const totals = points.map((point) => keys.reduce((sum, key) => sum + (point.values[key] || 0), 0));
  const top = niceMax(Math.max(0, ...totals));
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const slot = (WIDTH - PAD.left - PAD.right) / Math.max(1, points.length);
  const width = Math.max(1, slot * 0.8);
  const bars = points.map((point, index) => {
    let base = HEIGHT - PAD.bottom;
    const segments = keys
      .filter((key) => point.values[key] > 0)
      .map((key) => {
        const tall = (point.values[key] / top) * plotHeight;
        base -= tall;
        return svg(
          "rect",
          { class: `bar ${fillOf(key)}`, x: PAD.left + slot * index + (slot - width) / 2, y: base, width, height: tall, "data-key": key, "data-value": point.values[key] },
          svg("title", {}, `${point.title}: ${key} ${format(point.values[key])}`),
        );
      });
    return svg("g", { class: "column", "data-index": index }, segments);
  });
  return chart(id, title, [frame(points.map((p) => p.label), top, format), bars]);
}

// One line per series ({key, label, className}) over `points` ({label, values, title}); a
// missing value breaks the line (a dot marks each value). `top`: the axis's top (a share: 1).
export function lines({ id, title, points, series, format = String, top: fixedTop = null }) {
  const all = points.flatMap((point) => series.map((one) => point.values[one.key])).filter((v) => v !== null && v !== undefined);
  const top = fixedTop ?? niceMax(Math.max(0, ...all));
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const slot = (WIDTH - PAD.left - PAD.right) / Math.max(1, points.length);
  const at = (index, value) => [PAD.left + slot * (index + 0.5), PAD.top + plotHeight * (1 - value / top)];
  const drawn = series.map((one) => {
    const runs = [[]];
    points.forEach((point, index) => {
      const value = point.values[one.key];
      if (value === null || value === undefined) runs.push([]);
      else runs[runs.length - 1].push([index, value]);
    });
    const paths = runs.filter((run) => run.length > 1).map((run) => svg("polyline", { class: `line ${one.className}`, points: run.map(([i, v]) => at(i, v).join(",")).join(" ") }));
    const dots = runs.flat().map(([index, value]) => {
      const [x, y] = at(index, value);
      return svg("circle", { class: `dot ${one.className}`, cx: x, cy: y, r: 2.5, "data-key": one.key, "data-value": value }, svg("title", {}, `${points[index].title}: ${one.label} ${format(value)}`));
    });
    return svg("g", { class: "series", "data-key": one.key }, paths, dots);
  });
  return chart(id, title, [frame(points.map((p) => p.label), top, format), drawn]);
}

// The key of a chart: a swatch of each class with its name.
export function legend(entries) {
  return h("ul", { class: "legend" }, entries.map(([className, name]) => h("li", {}, h("span", { class: `swatch ${className}` }), name)));
}
