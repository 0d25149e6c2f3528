// A plan run drawn as the graph of its steps: a column per depth (a step stands right of
// every step it needs), an arrow from each need (dashed when the step only waits for it,
// solid when it reads its output), each box coloured by its step's status and linked to
// the step's execution.

import { svg } from "./charts.js";

const BOX = { width: 200, height: 46 };
const GAP = { x: 56, y: 18 };
const PAD = 8;
const cut = (text, length) => (text.length > length ? `${text.slice(0, length - 1)}…` : text);

// The depth of each step: 0 without needs, else one more than its deepest need (needs of
// an unknown step are ignored; a cycle, which a valid plan never has, stops the descent).
function depths(steps) {
  const byId = new Map(steps.map((step) => [step.id, step]));
  const depth = new Map();
  const visit = (id, seen) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id) || !byId.has(id)) return -1;
    seen.add(id);
    const step = byId.get(id);
    const needs = [...(step.inputs || []), ...(step.depends_on || [])];
    const value = 1 + Math.max(-1, ...needs.map((need) => visit(need, seen)));
    depth.set(id, value);
    return value;
  };
  for (const step of steps) visit(step.id, new Set());
  return depth;
}

function layout(steps) {
  const depth = depths(steps);
  const rows = new Map(); // depth -> steps placed in that column so far
  const place = new Map();
  for (const step of steps) {
    const column = depth.get(step.id);
    const row = rows.get(column) || 0;
    rows.set(column, row + 1);
    place.set(step.id, { x: PAD + column * (BOX.width + GAP.x), y: PAD + row * (BOX.height + GAP.y) });
  }
  const columns = Math.max(...depth.values()) + 1;
  const tallest = Math.max(...rows.values());
  return { place, width: PAD * 2 + columns * (BOX.width + GAP.x) - GAP.x, height: PAD * 2 + tallest * (BOX.height + GAP.y) - GAP.y };
}

function arrow(from, to, dataFlow) {
  const [x1, y1] = [from.x + BOX.width, from.y + BOX.height / 2];
  const [x2, y2] = [to.x - 2, to.y + BOX.height / 2];
  const bend = GAP.x / 2;
  const d = `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`;
  return svg("path", { class: dataFlow ? "edge" : "edge order-only", d, "marker-end": "url(#plan-arrow)" });
}

function box(step, run, at) {
  const status = run?.status || "pending";
  const shape = svg(
    "g",
    { class: `plan-node node-${status}`, transform: `translate(${at.x},${at.y})`, "data-step-id": step.id, "data-status": status },
    svg("title", {}, `${step.id} (${step.agent}): ${step.instruction}`),
    svg("rect", { width: BOX.width, height: BOX.height, rx: 6 }),
    svg("text", { class: "node-id", x: 10, y: 19 }, cut(step.id, 26)),
    svg("text", { class: "node-detail", x: 10, y: 36 }, cut(`${step.agent} · ${status.replaceAll("_", " ")}`, 32)),
  );
  return run?.execution_id ? svg("a", { href: `#/executions/${encodeURIComponent(run.execution_id)}` }, shape) : shape;
}

// The graph of `run`'s plan, or null before there is a plan.
export function planGraph(run) {
  const steps = run.plan?.steps || [];
  if (!steps.length) return null;
  const runs = new Map(run.steps.map((step) => [step.step_id, step]));
  const { place, width, height } = layout(steps);
  const edges = steps.flatMap((step) => {
    const inputs = new Set(step.inputs || []);
    const needs = [...new Set([...inputs, ...(step.depends_on || [])])].filter((need) => place.has(need));
    return needs.map((need) => arrow(place.get(need), place.get(step.id), inputs.has(need)));
  });
  return svg(
    "svg",
    { id: "plan-graph", class: "plan-graph", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": "The plan's steps and what each needs" },
    svg("defs", {}, svg("marker", { id: "plan-arrow", viewBox: "0 0 8 8", refX: 7, refY: 4, markerWidth: 8, markerHeight: 8, orient: "auto" }, svg("path", { d: "M0,0 L8,4 L0,8 z" }))),
    edges,
    steps.map((step) => box(step, runs.get(step.id), place.get(step.id))),
  );
}
