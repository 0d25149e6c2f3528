// Agents with their status: what runs, on which provider, and why one cannot (one short
// line in the list; every reason in full on the agent's page).

import { get } from "./api.js";
import { sideBySide } from "./diff.js";
import { every, fields, h, json, link, status, table, time } from "./dom.js";

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

// Its versions (each new content of its file), newest first, with the fields each changed;
// a version's button shows it beside the previous one, with the unified diff below (the
// text itself for version 1).
function versionRow(name, version, shown, signal, fail) {
  const show = async () => {
    try {
      const one = await get(`agents/${encodeURIComponent(name)}/versions/${version.version}`, signal);
      const unified = h("pre", { id: "agent-version-diff" }, one.diff || one.text);
      const sides = sideBySide(one.text, one.diff, { before: `v${one.version - 1}`, after: `v${one.version}` });
      shown.replaceChildren(
        h("h3", {}, `Version ${one.version}`),
        ...(sides ? [sides, h("details", {}, h("summary", {}, "Unified diff"), unified)] : [unified]),
      );
    } catch (error) {
      fail(error);
    }
  };
  return h(
    "tr",
    { dataset: { version: String(version.version) } },
    h("td", {}, h("button", { type: "button", onclick: show }, `v${version.version}`)),
    h("td", {}, time(version.created_at)),
    h("td", {}, h("code", {}, version.content_hash.slice(0, 12))),
    h("td", {}, version.changes.map((change) => change.field).join(", ") || "-"),
  );
}

export async function detail(root, { params, signal, fail }) {
  const [name] = params;
  const holder = h("div", { id: "agent" });
  const versions = h("div");
  const shown = h("div", { id: "agent-version" }); // outside the refresh: a diff stays open
  root.append(h("h2", {}, "Agent ", h("code", {}, name)), holder, h("h3", {}, "Versions"), versions, shown);
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
      const listed = await get(`agents/${encodeURIComponent(name)}/versions`, signal);
      versions.replaceChildren(
        table(
          "agent-versions",
          ["Version", "Recorded", "Hash", "Changed"],
          listed.map((version) => versionRow(name, version, shown, signal, fail)),
          "No version recorded yet.",
        ),
      );
    },
    signal,
    fail,
  );
}
