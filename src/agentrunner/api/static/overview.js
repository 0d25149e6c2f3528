// The overview: executions per time bucket by status, their p50/p95 latency, cost per day
// by agent (GET /stats/executions, /stats/cost) and, for an admin over every tenant, by
// tenant beside it, and each eval suite's scores run after run with the version each ran
// on (GET /evals/runs; no section while there is none). A tenant sees its own figures; an
// admin every tenant's, or one it picks.

import { ApiError, get } from "./api.js";
import { legend, lines, stackedBars } from "./charts.js";
import { cost, every, h } from "./dom.js";

const STATUSES = ["succeeded", "failed", "timed_out", "cancelled", "waiting_approval", "running", "queued"];
// [label, window seconds, bucket seconds]: each under the API's 1440 buckets.
const WINDOWS = [
  ["last hour, per minute", 3600, 60],
  ["last 6 hours, per 5 minutes", 6 * 3600, 300],
  ["last 24 hours, per 15 minutes", 86400, 900],
  ["last 7 days, per hour", 7 * 86400, 3600],
];
const DAYS = [7, 14, 30];
const SERIES_COLOURS = 8; // .series-0 … .series-7 in style.css, then round again
const NO_TENANT = "(no tenant)"; // executions with API auth off
const EVAL_RUNS = 100; // the newest runs drawn, the most GET /evals/runs answers
const percent = (value) => `${Math.round(value * 100)}%`;

const clock = (iso, bucket) => {
  const date = new Date(iso);
  return bucket >= 86400 ? date.toLocaleDateString() : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
};
const secondsText = (value) => (value >= 10 ? `${value.toFixed(0)} s` : `${Number(value.toPrecision(2))} s`);
const dollars = (value) => (value >= 1 ? `$${value.toFixed(2)}` : `$${Number(value.toPrecision(2))}`);

function choice(name, options, chosen) {
  return h("select", { name }, options.map(([value, label]) => h("option", { value, selected: String(value) === String(chosen) }, label)));
}

function executionCharts(stats) {
  const points = stats.buckets.map((bucket) => ({
    label: clock(bucket.start, stats.bucket_seconds),
    title: new Date(bucket.start).toLocaleString(),
    values: { ...bucket.counts, p50: bucket.p50_seconds, p95: bucket.p95_seconds },
  }));
  const counted = STATUSES.filter((status) => points.some((point) => point.values[status] > 0));
  const total = stats.buckets.reduce((sum, bucket) => sum + Object.values(bucket.counts).reduce((a, b) => a + b, 0), 0);
  const failed = stats.buckets.reduce((sum, bucket) => sum + (bucket.counts.failed || 0) + (bucket.counts.timed_out || 0), 0);
  return [
    h("h3", {}, "Executions by status"),
    h("p", { class: "hint", id: "executions-total" }, `${total} execution${total === 1 ? "" : "s"}, ${failed} failed or timed out`),
    stackedBars({ id: "chart-executions", title: "Executions per bucket by status", points, keys: STATUSES, fillOf: (key) => `fill-${key}` }),
    legend(counted.map((status) => [`fill-${status}`, status])),
    h("h3", {}, "Latency, created to finished"),
    lines({
      id: "chart-latency",
      title: "p50 and p95 latency per bucket",
      points,
      series: [
        { key: "p50", label: "p50", className: "series-p50" },
        { key: "p95", label: "p95", className: "series-p95" },
      ],
      format: secondsText,
    }),
    legend([
      ["series-p50", "p50"],
      ["series-p95", "p95"],
    ]),
  ];
}

// One stacked bar a day of `series(day)` ([name, cost] pairs), a colour per name that spent.
function costBars({ id, title, heading, figures, series }) {
  const names = [...new Set(figures.days.flatMap((day) => series(day).filter(([, spent]) => spent).map(([name]) => name)))].sort();
  const colour = new Map(names.map((name, index) => [name, `series-${index % SERIES_COLOURS}`]));
  const points = figures.days.map((day) => ({ label: day.day.slice(5), title: day.day, values: Object.fromEntries(series(day)) }));
  return h(
    "div",
    { class: "cost-chart", id: `${id}-panel` },
    h("h4", {}, heading),
    stackedBars({ id, title, points, keys: names, fillOf: (name) => colour.get(name), format: dollars }),
    legend(names.map((name) => [colour.get(name), name])),
  );
}

// Cost per day by agent and, over every tenant (an admin's view), by tenant beside it.
function costCharts(figures) {
  const spent = figures.days.reduce((sum, day) => sum + (day.cost_usd || 0), 0);
  const byAgent = costBars({
    id: "chart-cost",
    title: "Cost per UTC day by agent",
    heading: "by agent",
    figures,
    series: (day) => day.agents.map((agent) => [agent.agent, agent.cost_usd || 0]),
  });
  const everyTenant = figures.tenant === null && figures.tenants.length > 0;
  const byTenant =
    everyTenant &&
    costBars({
      id: "chart-cost-tenants",
      title: "Cost per UTC day by tenant",
      heading: "by tenant",
      figures,
      series: (day) => day.tenants.map((tenant) => [tenant.tenant || NO_TENANT, tenant.cost_usd || 0]),
    });
  return [
    h("h3", {}, "Cost per day"),
    h("p", { class: "hint", id: "cost-total" }, `${cost(spent)} over ${figures.days.length} days`, figures.tenant ? ` for ${figures.tenant}` : ""),
    h("div", { class: "cost-charts" }, byAgent, byTenant),
  ];
}

// One chart per suite: its ended runs oldest first, pass rate and mean judge score, each
// point labelled with the agent's version it ran on.
function evalCharts(runs, agent) {
  const ended = runs.filter((run) => run.finished_at && (!agent || run.agent === agent)).reverse();
  const suites = [...new Set(ended.map((run) => run.suite))].sort();
  if (!suites.length) return [];
  return [
    h("h3", {}, "Eval scores per version"),
    suites.map((suite) => {
      const points = ended
        .filter((run) => run.suite === suite)
        .map((run) => ({
          label: run.agent_version ? `v${run.agent_version}` : "-",
          title: `${new Date(run.created_at).toLocaleString()}, ${run.agent} v${run.agent_version ?? "?"}`,
          values: { pass_rate: run.pass_rate, mean_score: run.mean_score },
        }));
      // The pass rate drawn last, on top: without a judge the mean score is the same line.
      const series = [
        { key: "mean_score", label: "mean judge score", className: "series-0" },
        { key: "pass_rate", label: "cases passed", className: "series-1" },
      ];
      return h("div", { class: "eval-suite", dataset: { suite } }, h("h4", {}, suite), lines({ id: `chart-eval-${suite}`, title: `Eval ${suite}, run after run`, points, series, format: percent, top: 1 }));
    }),
    legend([
      ["series-1", "cases passed"],
      ["series-0", "mean judge score"],
    ]),
  ];
}

// The eval runs the caller may see, or none where the platform has no evals yet.
async function evalRuns(signal) {
  try {
    return (await get(`evals/runs?limit=${EVAL_RUNS}`, signal)).items;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return [];
    throw error;
  }
}

export async function show(root, { query, signal, fail }) {
  const windowChoice = choice("window", WINDOWS.map(([label, seconds]) => [seconds, label]), query.get("window") || 3600);
  const daysChoice = choice("days", DAYS.map((days) => [days, `${days} days`]), query.get("days") || 14);
  const agents = await get("agents", signal);
  const agentChoice = choice("agent", [["", "every agent"], ...agents.map((agent) => [agent.name, agent.name])], query.get("agent") || "");
  const tenantChoice = choice("tenant", [["", "every tenant"]], "");
  tenantChoice.hidden = true; // shown to an admin, once the API says which tenants there are
  const executions = h("div", { id: "overview-executions" });
  const spending = h("div", { id: "overview-cost" });
  const evals = h("div", { id: "overview-evals" });
  const refresh = async () => {
    const [, seconds, bucket] = WINDOWS.find(([, value]) => String(value) === windowChoice.value);
    const tenant = tenantChoice.value ? { tenant: tenantChoice.value } : {};
    const agent = agentChoice.value ? { agent: agentChoice.value } : {};
    const [stats, figures, runs] = await Promise.all([
      get(`stats/executions?${new URLSearchParams({ window: seconds, bucket, ...agent, ...tenant })}`, signal),
      get(`stats/cost?${new URLSearchParams({ days: daysChoice.value, ...agent, ...tenant })}`, signal),
      evalRuns(signal),
    ]);
    if (figures.tenants.length > 1 && tenantChoice.options.length === 1) {
      tenantChoice.append(...figures.tenants.map((name) => h("option", { value: name }, name)));
      tenantChoice.hidden = false;
    }
    executions.replaceChildren(...executionCharts(stats));
    spending.replaceChildren(...costCharts(figures));
    evals.replaceChildren(...evalCharts(runs, agentChoice.value).flat());
  };
  const controls = [windowChoice, daysChoice, agentChoice, tenantChoice];
  for (const control of controls) control.addEventListener("change", () => refresh().catch(fail));
  root.append(h("h2", {}, "Overview"), h("div", { class: "filters" }, controls), executions, spending, evals);
  await every(10000, refresh, signal, fail);
}
