// Plan runs of collaborative agents: their steps, and the questions steps ask, answered
// here with a form; a plan held for approval is approved or rejected here too. A step whose
// execution waits before a tool call is shown with the call, linked to that execution (where
// it is approved, denied or answered). The plan is drawn as a graph of its steps too.

import { get, post } from "./api.js";
import { cost, every, fields, h, json, link, shortId, status, table, time, tokens } from "./dom.js";
import { planGraph } from "./plan_graph.js";

const STATUSES = ["planning", "awaiting_approval", "running", "needs_clarification", "waiting_approval", "succeeded", "failed", "rejected", "cancelled"];
const TERMINAL = new Set(["succeeded", "failed", "rejected", "cancelled"]);

function pending(run) {
  return run.clarifications.filter((question) => question.status === "pending");
}

function row(run) {
  const done = run.steps.filter((step) => step.status === "succeeded").length;
  const questions = pending(run).length;
  return h(
    "tr",
    { dataset: { planRunId: run.id } },
    h("td", { title: run.id }, link(`#/plan-runs/${run.id}`, shortId(run.id))),
    h("td", {}, run.agent),
    h("td", {}, status(run.status)),
    h("td", {}, `${done} / ${run.steps.length}`),
    h("td", {}, questions ? h("strong", {}, `${questions} waiting`) : "-"),
    h("td", {}, cost(run.cost_usd)),
    h("td", {}, time(run.created_at)),
  );
}

export async function list(root, { query, signal, fail }) {
  const statusFilter = h(
    "select",
    { name: "status" },
    h("option", { value: "" }, "any status"),
    STATUSES.map((value) => h("option", { value, selected: value === query.get("status") }, value)),
  );
  const holder = h("div");
  const refresh = async () => {
    const params = new URLSearchParams({ limit: "50" });
    if (statusFilter.value) params.set("status", statusFilter.value);
    const page = await get(`plan-runs?${params}`, signal);
    holder.replaceChildren(
      table(
        "plan-runs",
        ["Plan run", "Agent", "Status", "Steps done", "Questions", "Cost", "Created"],
        page.items.map(row),
        "No plan runs yet: invoke a collaborative agent.",
      ),
    );
  };
  statusFilter.addEventListener("change", () => refresh().catch(fail));
  root.append(h("h2", {}, "Plan runs"), h("div", { class: "filters" }, statusFilter), holder);
  await every(2000, refresh, signal, fail);
}

function answerInput(question) {
  const name = `answer-${question.id}`;
  if (question.kind === "choice" || question.kind === "confirm") {
    const options = question.kind === "choice" ? question.options : ["yes", "no"];
    return h(
      "fieldset",
      { class: "options" },
      h("legend", {}, "Answer"),
      options.map((option) =>
        h("label", {}, h("input", { type: "radio", name, value: option, required: true, checked: option === question.default }), ` ${option}`),
      ),
    );
  }
  return h("label", {}, "Answer ", h("textarea", { name, rows: 3, required: true, maxlength: 20000 }, question.default || ""));
}

function questionForm(run, question, onAnswered, fail) {
  const submit = h("button", { type: "submit" }, "Answer");
  const form = h(
    "form",
    { class: "clarification", dataset: { clarificationId: question.id } },
    h("p", { class: "question" }, h("strong", {}, `Step ${question.step_id} asks: `), question.question),
    question.expires_at ? h("p", { class: "hint" }, "Unanswered after ", time(question.expires_at), question.default ? ` it takes "${question.default}".` : " the run fails.") : null,
    answerInput(question),
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = new FormData(form).get(`answer-${question.id}`);
    submit.disabled = true;
    try {
      const url = `plan-runs/${encodeURIComponent(run.id)}/clarifications/${encodeURIComponent(question.id)}`;
      onAnswered(await post(url, { response, answered_by: "web dashboard" }));
    } catch (error) {
      submit.disabled = false;
      fail(error);
    }
  });
  return form;
}

function approval(run, onChanged, fail) {
  const act = (verb) => () => post(`plan-runs/${encodeURIComponent(run.id)}/${verb}`).then(onChanged, fail);
  return h(
    "div",
    { class: "approval" },
    h("p", {}, "This plan waits for approval before any step runs."),
    h("button", { type: "button", onclick: act("approve") }, "Approve"),
    h("button", { type: "button", class: "danger", onclick: act("reject") }, "Reject"),
  );
}

function waitingCall(step) {
  const call = step.pending_tool_call;
  const gate = call.reason === "approval";
  return h(
    "div",
    { class: "approval waiting-step", dataset: { stepId: step.step_id } },
    h(
      "p",
      {},
      h("strong", {}, `Step ${step.step_id} (${step.agent}) `),
      gate ? `asks to call ${call.tool}: it waits for approval.` : `was cut short calling ${call.tool}: did it happen?`,
      " Answer it on ",
      link(`#/executions/${step.execution_id}`, `its execution ${shortId(step.execution_id)}`),
      ".",
    ),
    json(call.arguments),
  );
}

function stepRow(step) {
  return h(
    "tr",
    { dataset: { stepId: step.step_id } },
    h("td", {}, step.step_id),
    h("td", {}, step.agent),
    h("td", {}, status(step.status)),
    h("td", {}, step.output ? h("pre", { class: "output" }, step.output) : step.error ? `${step.error.code}: ${step.error.message}` : "-"),
    h("td", {}, tokens(step.usage)),
    h("td", {}, cost(step.cost_usd)),
    h("td", {}, step.execution_id ? link(`#/executions/${step.execution_id}`, shortId(step.execution_id)) : "-"),
  );
}

function answered(question) {
  return h(
    "li",
    { dataset: { clarificationId: question.id } },
    `Step ${question.step_id} asked "${question.question}": `,
    h("strong", {}, question.answer ?? "-"),
    ` (${question.status}${question.answered_by ? `, by ${question.answered_by}` : ""})`,
  );
}

function renderRun(run, onChanged, fail) {
  const questions = pending(run);
  const instructions = new Map((run.plan?.steps || []).map((step) => [step.id, step.instruction]));
  return [
    fields([
      ["Agent", run.agent],
      ["Status", status(run.status)],
      ["Execution", link(`#/executions/${run.id}`, shortId(run.id))],
      ["Created", time(run.created_at)],
      ["Finished", time(run.finished_at)],
      ["Tokens", tokens(run.usage)],
      ["Cost", cost(run.cost_usd)],
      ["Trace id", h("code", {}, run.trace_id)],
    ]),
    run.status === "awaiting_approval" ? approval(run, onChanged, fail) : null,
    questions.length ? [h("h3", {}, "Waiting for an answer"), questions.map((question) => questionForm(run, question, onChanged, fail))] : null,
    run.waiting_steps?.length ? [h("h3", {}, "Waiting before a tool call"), run.waiting_steps.map(waitingCall)] : null,
    run.plan?.steps?.length ? [h("h3", {}, "Plan"), h("div", { class: "graph-holder" }, planGraph(run))] : null,
    h("h3", {}, "Steps"),
    table(
      "steps",
      ["Step", "Agent", "Status", "Output", "Tokens", "Cost", "Execution"],
      run.steps.map((step) => {
        const tr = stepRow(step);
        tr.title = instructions.get(step.step_id) || "";
        return tr;
      }),
      "No plan yet.",
    ),
    run.result ? [h("h3", {}, "Result"), h("pre", { id: "plan-result", class: "output" }, run.result)] : null,
    run.error ? [h("h3", {}, "Error"), h("pre", { class: "error-text" }, `${run.error.code}: ${run.error.message}`)] : null,
    run.clarifications.length > questions.length
      ? [h("h3", {}, "Answered questions"), h("ul", {}, run.clarifications.filter((q) => q.status !== "pending").map(answered))]
      : null,
    h("h3", {}, "Task"),
    json(run.task),
  ];
}

export async function detail(root, { params, signal, fail }) {
  const [id] = params;
  const body = h("div", { id: "plan-run" });
  root.append(h("h2", {}, "Plan run ", h("code", {}, id)), body);
  let shown = null; // the version on screen: a form being filled in is not redrawn needlessly
  const show = (run) => {
    shown = `${run.version}:${run.status}`;
    body.replaceChildren(h("div", {}, renderRun(run, show, fail)));
  };
  await every(
    2000,
    async () => {
      if (shown && TERMINAL.has(shown.split(":")[1])) return;
      const run = await get(`plan-runs/${encodeURIComponent(id)}`, signal);
      if (`${run.version}:${run.status}` !== shown) show(run);
    },
    signal,
    fail,
  );
}
