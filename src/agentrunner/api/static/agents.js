// Agents with their status: what runs, on which provider, and why one cannot.

import { get } from "./api.js";
import { every, h, link, status, table } from "./dom.js";

function row(agent) {
  return h(
    "tr",
    { dataset: { agent: agent.name } },
    h("td", {}, link(`#/executions?agent=${encodeURIComponent(agent.name)}`, agent.name)),
    h("td", {}, agent.execution_mode || "-"),
    h("td", {}, status(agent.status), agent.reasons.length ? h("div", { class: "reasons" }, agent.reasons.join("; ")) : null),
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
