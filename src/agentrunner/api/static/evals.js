// Evals: each suite's scores per version of its agent (GET /evals/scores: one point per
// version, in the order each was first evaluated), the runs (GET /evals/runs) with a Run
// button per suite (POST /evals/runs), and one run with each case's outcome and why it
// failed. Every text from a run (the model's answer quoted by a check, a judge's reason) is
// a text node: nothing of it runs as markup.

import { ApiError, get, post } from "./api.js";
import { legend, lines } from "./charts.js";
import { cost, every, fields, h, link, shortId, status, table, time } from "./dom.js";

const RUNS = 50; // the newest runs listed
const percent = (value) => (value === null || value === undefined ? "-" : `${Math.round(value * 100)}%`);
const score = (value) => (value === null || value === undefined ? "-" : Number(value).toFixed(2));
const latency = (ms) => (ms === null || ms === undefined ? "-" : ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`);
const runHref = (id) => `#/evals/${encodeURIComponent(id)}`;
const version = (value) => (value === null || value === undefined ? "-" : `v${value}`);

// The suites the caller may run, or none where the platform has no evals (404) or refuses.
async function suites(signal) {
  try {
    return (await get("evals", signal)).suites;
  } catch (error) {
    if (error instanceof ApiError && (error.status === 404 || error.status === 403)) return [];
    throw error;
  }
}

// A chart per suite, a point per version; `opened`: the suites whose table of versions was
// open before the refresh (kept open).
function scoreCharts(scores, opened) {
  if (!scores.suites.length) return [h("p", { class: "hint" }, "No eval run has ended yet.")];
  return [
    legend([
      ["series-1", "cases passed (mean over the version's runs)"],
      ["series-0", "mean score"],
    ]),
    scores.suites.map((suite) => {
      const points = suite.versions.map((one) => ({
        label: version(one.agent_version),
        title: `${suite.agent} ${version(one.agent_version)}: ${one.runs} run${one.runs === 1 ? "" : "s"}, ${new Date(one.first_run_at).toLocaleString()} to ${new Date(one.last_run_at).toLocaleString()}`,
        values: { pass_rate: one.pass_rate, mean_score: one.mean_score },
      }));
      const series = [
        { key: "mean_score", label: "mean score", className: "series-0" },
        { key: "pass_rate", label: "cases passed", className: "series-1" },
      ];
      const versions = suite.versions
        .slice()
        .reverse()
        .map((one) =>
          h(
            "tr",
            { dataset: { version: String(one.agent_version ?? "") } },
            h("td", {}, version(one.agent_version)),
            h("td", {}, String(one.runs)),
            h("td", {}, percent(one.pass_rate)),
            h("td", {}, score(one.mean_score)),
            h("td", {}, link(runHref(one.last_run_id), `${percent(one.last_pass_rate)}, ${score(one.last_mean_score)}`)),
            h("td", {}, time(one.first_run_at)),
            h("td", {}, time(one.last_run_at)),
            h("td", {}, cost(one.cost_usd)),
          ),
        );
      return h(
        "div",
        { class: "eval-suite", dataset: { suite: suite.suite } },
        h("h4", {}, suite.suite, suite.agent === suite.suite ? "" : ` (agent ${suite.agent})`),
        lines({ id: `chart-eval-scores-${suite.suite}`, title: `Eval ${suite.suite}: scores per version`, points, series, format: percent, top: 1 }),
        h(
          "details",
          { open: opened.has(suite.suite) },
          h("summary", {}, "Per version"),
          table(`eval-versions-${suite.suite}`, ["Version", "Runs", "Passed", "Mean score", "Newest run", "First run", "Last run", "Cost"], versions),
        ),
      );
    }),
    h("p", { class: "hint" }, `From the newest ${scores.runs_read} runs that ended passed or failed.`),
  ];
}

function runRow(run) {
  return h(
    "tr",
    { dataset: { runId: run.run_id } },
    h("td", { title: run.run_id }, link(runHref(run.run_id), shortId(run.run_id))),
    h("td", {}, run.suite),
    h("td", {}, `${run.agent} ${version(run.agent_version)}`),
    h("td", { class: "status-cell" }, status(run.status), run.error ? h("div", { class: "reasons" }, run.error) : null),
    h("td", {}, `${percent(run.pass_rate)} (${run.passed_cases}/${run.total_cases})`),
    h("td", {}, score(run.mean_score)),
    h("td", {}, cost(run.cost_usd)),
    h("td", {}, time(run.created_at)),
  );
}

// A Run button per suite; a refusal is shown as the API said it.
function runForm(names, fail) {
  const refused = h("p", { id: "eval-run-error", class: "error", role: "alert" });
  const buttons = names.map((name) => {
    const button = h("button", { type: "button", dataset: { suite: name } }, `Run ${name}`);
    button.addEventListener("click", async () => {
      button.disabled = true;
      refused.textContent = "";
      try {
        const run = await post("evals/runs", { suite: name });
        location.hash = runHref(run.run_id);
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) fail(error);
        else refused.textContent = error instanceof ApiError ? `${error.status} ${error.code}: ${error.message}` : String(error);
      } finally {
        button.disabled = false;
      }
    });
    return button;
  });
  return h("div", { id: "eval-run-form", class: "filters" }, buttons, refused);
}

export async function list(root, { query, signal, fail }) {
  const names = await suites(signal);
  const suiteFilter = h(
    "select",
    { name: "suite" },
    h("option", { value: "" }, "every suite"),
    names.map((name) => h("option", { value: name, selected: name === query.get("suite") }, name)),
  );
  const charts = h("div", { id: "eval-scores" });
  const runs = h("div", { id: "eval-runs-list" });
  const refresh = async () => {
    const suite = suiteFilter.value ? { suite: suiteFilter.value } : {};
    const [scores, page] = await Promise.all([
      get(`evals/scores?${new URLSearchParams(suite)}`, signal),
      get(`evals/runs?${new URLSearchParams({ limit: RUNS, ...suite })}`, signal),
    ]);
    const opened = new Set([...charts.querySelectorAll(".eval-suite details[open]")].map((open) => open.closest(".eval-suite").dataset.suite));
    charts.replaceChildren(...scoreCharts(scores, opened).flat());
    runs.replaceChildren(
      table(
        "eval-runs",
        ["Run", "Suite", "Agent", "Status", "Passed", "Mean score", "Cost", "Started"],
        page.items.map(runRow),
        "No eval run yet: run a suite (agentrunner eval NAME, or a Run button above).",
      ),
    );
  };
  suiteFilter.addEventListener("change", () => refresh().catch(fail));
  root.append(
    h("h2", {}, "Evals"),
    ...(names.length ? [runForm(names, fail)] : []),
    h("div", { class: "filters" }, suiteFilter),
    h("h3", {}, "Scores per version"),
    charts,
    h("h3", {}, "Runs"),
    runs,
  );
  await every(5000, refresh, signal, fail);
}

// Why a case failed (or passed): its failed checks with their detail, its judge's verdict,
// its error.
function why(result) {
  const reasons = result.expectations.filter((one) => !one.passed).map((one) => h("li", {}, h("code", {}, one.kind), ": ", one.detail));
  const judge = result.judge;
  if (judge && judge.error) reasons.push(h("li", {}, `judge ${judge.agent}: `, judge.error));
  else if (judge) reasons.push(h("li", { class: result.passed ? "hint" : null }, `judge ${judge.agent} (${score(judge.score)}): `, judge.reason));
  if (result.error) reasons.push(h("li", {}, result.error));
  return reasons.length ? h("ul", { class: "why" }, reasons) : "-";
}

function caseRow(result) {
  return h(
    "tr",
    { dataset: { case: result.case, passed: String(result.passed) } },
    h("td", {}, result.case),
    h("td", {}, status(result.passed ? "passed" : "failed")),
    h("td", {}, score(result.score)),
    h("td", {}, cost(result.cost_usd)),
    h("td", {}, latency(result.latency_ms)),
    h("td", { class: "why-cell" }, why(result)),
    h("td", {}, result.execution_id ? link(`#/executions/${encodeURIComponent(result.execution_id)}`, shortId(result.execution_id)) : "-"),
  );
}

function comparison(run) {
  const compared = run.comparison;
  if (!compared) return null;
  const names = (changes) => changes.map((change) => change.case).join(", ") || "none";
  return [
    h("h3", {}, "Against its baseline"),
    fields([
      ["Baseline", link(runHref(compared.baseline_run_id), shortId(compared.baseline_run_id))],
      ["Baseline version", version(compared.baseline_agent_version)],
      ["Regressed", names(compared.regressed)],
      ["Improved", names(compared.improved)],
      ["New cases", compared.new_cases.join(", ") || "none"],
    ]),
  ];
}

export async function detail(root, { params, signal, fail }) {
  const [id] = params;
  const holder = h("div", { id: "eval-run" });
  root.append(h("h2", {}, "Eval run ", h("code", {}, id)), h("p", {}, link("#/evals", "All eval runs")), holder);
  const stop = new AbortController();
  signal.addEventListener("abort", () => stop.abort());
  await every(
    2000,
    async () => {
      const run = await get(`evals/runs/${encodeURIComponent(id)}`, signal);
      holder.replaceChildren(
        fields([
          ["Suite", run.suite],
          ["Agent", `${run.agent} ${version(run.agent_version)}`],
          ["Status", [status(run.status), run.error ? h("div", { class: "error-text" }, run.error) : null]],
          ["Passed", `${percent(run.pass_rate)} (${run.passed_cases} of ${run.total_cases}; threshold ${percent(run.threshold)})`],
          ["Mean score", score(run.mean_score)],
          ["Cost", cost(run.cost_usd)],
          ["Started", time(run.created_at)],
          ["Finished", time(run.finished_at)],
        ]),
        h("h3", {}, "Cases"),
        table("eval-cases", ["Case", "Result", "Score", "Cost", "Latency", "Why", "Execution"], run.cases.map(caseRow), "No case has ended yet."),
        ...(comparison(run) || []),
      );
      if (run.status !== "running") stop.abort(); // it ended: nothing more to poll
    },
    stop.signal,
    fail,
  );
}
