// Executions: the newest, refreshed as they come, the unfinished ones followed live over
// their SSE stream; and one execution's whole record (input, output, usage, cost, steps, trace).

import { get, post, streamEvents } from "./api.js";
import { cost, every, fields, h, json, link, seconds, shortId, status, table, time, tokens } from "./dom.js";

const STATUSES = ["queued", "running", "waiting_approval", "succeeded", "failed", "timed_out", "cancelled"];
const TERMINAL = new Set(["succeeded", "failed", "timed_out", "cancelled"]);
// Browsers open about 6 connections per server: leave room for the page's other calls.
const MAX_FOLLOWED = 3;

function row(execution) {
  return h(
    "tr",
    { dataset: { executionId: execution.execution_id } },
    h("td", { title: execution.execution_id }, link(`#/executions/${execution.execution_id}`, shortId(execution.execution_id))),
    h("td", {}, execution.agent),
    h("td", { class: "status-cell" }, status(execution.status)),
    h("td", {}, time(execution.created_at)),
    h("td", {}, seconds(execution.started_at, execution.finished_at)),
    h("td", {}, tokens(execution.usage)),
    h("td", {}, cost(execution.cost_usd)),
  );
}

function select(name, values, chosen) {
  return h(
    "select",
    { name },
    h("option", { value: "" }, `any ${name}`),
    values.map((value) => h("option", { value, selected: value === chosen }, value)),
  );
}

export async function list(root, { query, signal, fail }) {
  const agents = await get("agents", signal);
  const agentFilter = select("agent", agents.map((agent) => agent.name), query.get("agent") || "");
  const statusFilter = select("status", STATUSES, query.get("status") || "");
  const holder = h("div");
  const followed = new Map(); // execution id -> AbortController of its stream

  const follow = (id) => {
    const stop = new AbortController();
    signal.addEventListener("abort", () => stop.abort());
    followed.set(id, stop);
    const update = (name, data) => {
      const cell = holder.querySelector(`tr[data-execution-id="${CSS.escape(id)}"] .status-cell`);
      if (name === "status" && cell) cell.replaceChildren(status(data.status));
      if (name === "finished") {
        const old = holder.querySelector(`tr[data-execution-id="${CSS.escape(id)}"]`);
        if (old) old.replaceWith(row(data));
      }
    };
    streamEvents(`executions/${encodeURIComponent(id)}/events`, update, stop.signal)
      .catch(() => {}) // the next refresh shows where it stands
      .finally(() => followed.delete(id));
  };

  const refresh = async () => {
    const params = new URLSearchParams({ limit: "50" });
    if (agentFilter.value) params.set("agent", agentFilter.value);
    if (statusFilter.value) params.set("status", statusFilter.value);
    const page = await get(`executions?${params}`, signal);
    holder.replaceChildren(
      table(
        "executions",
        ["Execution", "Agent", "Status", "Created", "Took", "Tokens", "Cost"],
        page.items.map(row),
        "No executions yet: invoke an agent (POST /agents/{name}/invoke).",
      ),
    );
    for (const execution of page.items) {
      if (followed.size >= MAX_FOLLOWED) break;
      if (!TERMINAL.has(execution.status) && !followed.has(execution.execution_id)) follow(execution.execution_id);
    }
  };
  for (const filter of [agentFilter, statusFilter]) filter.addEventListener("change", () => refresh().catch(fail));

  root.append(
    h("h2", {}, "Executions"),
    h("p", { class: "hint" }, "New executions appear as they are accepted; unfinished ones update live."),
    h("div", { class: "filters" }, agentFilter, statusFilter),
    holder,
  );
  await every(2000, refresh, signal, fail);
}

// The journal: each model call and tool call, in the order the loop took them.
function timeline(steps) {
  return table(
    "execution-steps",
    ["Step", "Kind", "Name", "Status", "Took", "Replayed"],
    steps.map((step) =>
      h(
        "tr",
        { class: "step", dataset: { generation: String(step.generation), seq: String(step.seq) } },
        h("td", { title: `generation ${step.generation}` }, step.generation > 1 ? `${step.generation}.${step.seq}` : String(step.seq)),
        h("td", {}, step.kind),
        h("td", {}, step.name),
        h("td", {}, status(step.status)),
        h("td", {}, step.duration_ms === null ? "-" : `${Math.round(step.duration_ms)} ms`),
        h("td", { class: "replayed" }, step.replayed ? "replayed" : ""),
      ),
    ),
    "No model or tool call recorded yet.",
  );
}

function replayOf(source) {
  if (!source) return undefined; // not a replay: no line at all
  return [link(`#/executions/${source.execution_id}`, shortId(source.execution_id)), ` from step ${source.from_step}`];
}

function failedChecks(failed) {
  if (!failed || !failed.length) return undefined; // none failed (or none declared): no line at all
  const line = failed.map((check) => `${check.check}: ${check.detail}`).join("; ");
  return h("span", { id: "failed-checks", class: "error-text" }, `${failed.length} failed — ${line}`);
}

function record(execution, output) {
  const error = execution.error ? `${execution.error.code}: ${execution.error.message}` : null;
  return [
    fields([
      ["Agent", link(`#/executions?agent=${encodeURIComponent(execution.agent)}`, execution.agent)],
      ["Status", status(execution.status)],
      ["Provider / model", execution.provider ? `${execution.provider} / ${execution.model}` : "-"],
      ["Attempts", String(execution.attempts)],
      ["Session", execution.session_id],
      ["Schedule", execution.schedule_id],
      ["Replay of", replayOf(execution.replay_of)],
      ["Checks", failedChecks(execution.failed_checks)],
      ["Worker", execution.worker],
      ["Created", time(execution.created_at)],
      ["Started", time(execution.started_at)],
      ["Finished", time(execution.finished_at)],
      ["Took", seconds(execution.started_at, execution.finished_at)],
    ]),
    h("h3", {}, "Usage and cost"),
    fields([
      ["Input tokens", String(execution.usage.input_tokens)],
      ["Output tokens", String(execution.usage.output_tokens)],
      ["Cost", cost(execution.cost_usd)],
    ]),
    h("h3", {}, "Input"),
    json(execution.input),
    h("h3", {}, "Output"),
    output,
    error ? [h("h3", {}, "Error"), h("pre", { id: "execution-error", class: "error-text" }, error)] : null,
    h("h3", {}, "Steps"),
    timeline(execution.steps || []),
    execution.saved_cost_usd ? h("p", { class: "hint" }, `Replayed steps saved ${cost(execution.saved_cost_usd)}.`) : null,
    h("h3", {}, "Trace"),
    fields([["Trace id", h("code", { id: "trace-id" }, execution.trace_id)]]),
    h("p", { class: "hint" }, "Every log line of every role about this execution carries this trace_id."),
  ];
}

// The tool call a waiting execution stopped before, and the answers a human may give.
function pendingCall(execution, path, onAnswered, fail) {
  const pending = execution.pending_tool_call;
  if (execution.status !== "waiting_approval" || !pending) return null;
  const answer = (verb, body) => () => post(`${path}/${verb}`, body).then(onAnswered, fail);
  const gate = pending.reason === "approval";
  const result = h("textarea", { name: "result", rows: 3, maxlength: 100000, placeholder: "What the call returned (the model reads it)" });
  return h(
    "div",
    { class: "approval", id: "pending-tool-call" },
    h("h3", {}, gate ? "Waits for approval" : "Outcome unknown"),
    h(
      "p",
      {},
      gate
        ? `The agent asks to call ${pending.tool} (step ${pending.seq}). It runs once approved; denied, the model is told.`
        : `A crash cut the call of ${pending.tool} (step ${pending.seq}) short: did it happen?`,
    ),
    json(pending.arguments),
    gate
      ? [
          h("button", { type: "button", onclick: answer("approve", {}) }, "Approve"),
          h("button", { type: "button", class: "danger", onclick: answer("deny", {}) }, "Deny"),
        ]
      : [
          result,
          h("button", { type: "button", onclick: () => answer("tool-outcome", { happened: true, result: result.value })() }, "It happened"),
          h("button", { type: "button", onclick: answer("tool-outcome", { again: true }) }, "Run it again"),
          h("button", { type: "button", class: "danger", onclick: answer("tool-outcome", { fail: true }) }, "Fail"),
        ],
  );
}

export async function detail(root, { params, signal, fail }) {
  const [id] = params;
  const path = `executions/${encodeURIComponent(id)}`;
  const body = h("div", { id: "execution" });
  const extras = h("div");
  root.append(h("h2", {}, "Execution ", h("code", {}, id)), body, extras);

  let output = h("pre", { id: "execution-output", class: "output" });
  const render = (execution) => {
    output = h("pre", { id: "execution-output", class: "output" }, execution.output ?? output.textContent);
    const cancel = TERMINAL.has(execution.status)
      ? null
      : h("button", { type: "button", class: "danger", onclick: () => post(`${path}/cancel`).catch(fail) }, "Cancel");
    const refetch = () => get(path, signal).then((answered) => render((latest = answered)), fail);
    body.replaceChildren(h("div", {}, record(execution, output), pendingCall(execution, path, refetch, fail), cancel));
  };
  const execution = await get(path, signal);
  render(execution);

  // A collaborative agent's execution is its plan run.
  get(`agents/${encodeURIComponent(execution.agent)}`, signal)
    .then((agent) => (agent.execution_mode === "collaborative" ? get(`plan-runs/${encodeURIComponent(id)}`, signal) : null))
    .then((run) => run && extras.replaceChildren(h("p", {}, "Plan run: ", link(`#/plan-runs/${run.id}`, `${run.status}, ${run.steps.length} steps`))))
    .catch(() => {}); // an agent removed since, or a run not planned yet: nothing to link

  if (TERMINAL.has(execution.status)) return;
  let latest = execution;
  await streamEvents(
    `${path}/events`,
    (name, data) => {
      if (name === "status" && data.status === "waiting_approval") get(path, signal).then((waiting) => render((latest = waiting)), fail); // the call it waits on
      else if (name === "status") render((latest = { ...latest, status: data.status }));
      else if (name === "text") output.append(data.text);
      else if (name === "finished") {
        render((latest = { ...latest, ...data }));
        // The stream's record has no steps: read them as the run left them.
        get(path, signal).then((full) => render((latest = full))).catch(() => {});
      }
    },
    signal,
  ).catch((error) => {
    if (!signal.aborted) fail(error);
  });
}
