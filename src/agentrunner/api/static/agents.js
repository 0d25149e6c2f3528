// Agents with their status: what runs, on which provider, and why one cannot (one short
// line in the list; every reason in full on the agent's page).

import { get } from "./api.js";
import { every, fields, h, json, link, status, table } from "./dom.js";

const agentHref = (name) => `#/agents/${encodeURIComponent(name)}`;

function row(agent) {
  return h(
    "tr",
    { dataset: { agent: agent.name } },
    h("td", {}, link(agentHref(agent.name), agent.name)),
    h("td", {}, agent.execution_mode || "-"),
    h(
      "td",
      {},
      status(agent.status),
      agent.short_reason ? h("div", { class: "reasons", title: agent.reasons.join("\n") }, agent.short_reason) : null,
    ),
    h("td", {}, agent.llm ? `${agent.llm.provider} / ${agent.llm.model}` : "-"),
    h("td", {}, agent.description || ""),
    h("td", {}, agent.tags.join(", ")),
  );
}

export async function list(root, { signal, fail }) {
  const holder = h("div");
  root.append(h("h2", {}, "Agents"), holder);
  await every(
    5000,
    async () => {
      const agents = await get("agents", signal);
      holder.replaceChildren(
        table("agents", ["Name", "Mode", "Status", "Model", "Description", "Tags"], agents.map(row), "No agents loaded."),
      );
    },
    signal,
    fail,
  );
}

function reasons(agent) {
  if (!agent.reasons.length) return null;
  return [h("h3", {}, "Why it cannot run fully"), h("ul", { id: "agent-reasons" }, agent.reasons.map((reason) => h("li", {}, reason)))];
}

// The offered tools whose calls may be made again after a crash left their outcome unknown
// (per_call: some of their calls, such as http_request's GETs); the others are never repeated.
function repeatable(agent) {
  const said = agent.offered_tools_repeatable;
  const names = agent.offered_tools
    .filter((name) => said[name] === "always" || said[name] === "per_call")
    .map((name) => (said[name] === "per_call" ? `${name} (some calls)` : name));
  return names.join(", ") || "none";
}

export async function detail(root, { params, signal, fail }) {
  const [name] = params;
  const holder = h("div", { id: "agent" });
  root.append(h("h2", {}, "Agent ", h("code", {}, name)), holder);
  await every(
    5000,
    async () => {
      const agent = await get(`agents/${encodeURIComponent(name)}`, signal);
      // One element: replaceChildren takes nodes, not the nested lists `h` flattens.
      holder.replaceChildren(
        h(
          "div",
          {},
          fields([
            ["Status", h("span", {}, status(agent.status), agent.short_reason ? ` ${agent.short_reason}` : "")],
            ["Mode", agent.execution_mode || "-"],
            ["Model", agent.llm ? `${agent.llm.provider} / ${agent.llm.model}` : "-"],
            ["Description", agent.description || "-"],
            ["File", agent.source],
            ["Triggers", agent.event_subscriptions.join(", ") || "-"],
            ["Tools offered", agent.offered_tools.join(", ") || "-"],
            ["Repeatable after a crash", repeatable(agent)],
            ["Executions", link(`#/executions?agent=${encodeURIComponent(agent.name)}`, "its executions")],
          ]),
          reasons(agent),
          agent.warnings.length ? [h("h3", {}, "Warnings"), h("ul", {}, agent.warnings.map((w) => h("li", {}, w)))] : null,
          agent.schedule ? [h("h3", {}, "Schedule"), json(agent.schedule)] : null,
          agent.tools.length ? [h("h3", {}, "Tools"), json(agent.tools)] : null,
        ),
      );
    },
    signal,
    fail,
  );
}
