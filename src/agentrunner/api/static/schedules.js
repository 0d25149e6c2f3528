// Schedules with their next fire (read from the orchestrator; the scheduler changes them).

import { get } from "./api.js";
import { every, h, table, time } from "./dom.js";

const PAGE = 500;

function timing(schedule) {
  if (schedule.cron) return `cron ${schedule.cron} (${schedule.timezone})`;
  return `every ${schedule.interval_seconds} s`;
}

function row(view) {
  const schedule = view.schedule;
  return h(
    "tr",
    { dataset: { schedule: schedule.id } },
    h("td", {}, schedule.id),
    h("td", {}, schedule.agent),
    h("td", {}, timing(schedule)),
    h("td", {}, schedule.paused ? "paused" : time(view.next_fire_at)),
    h("td", {}, time(schedule.last_fire_at)),
    h("td", {}, `${schedule.misfire_policy} / ${schedule.overlap_policy}`),
    h("td", {}, schedule.source),
  );
}

export async function list(root, { signal, fail }) {
  const holder = h("div");
  root.append(h("h2", {}, "Schedules"), holder);
  await every(
    5000,
    async () => {
      // One page, the largest the API gives: past it, the hint says so (GET /schedules pages).
      const schedules = await get(`schedules?limit=${PAGE}`, signal);
      holder.replaceChildren(
        table(
          "schedules",
          ["Id", "Agent", "When", "Next fire", "Last fire", "Misfire / overlap", "From"],
          schedules.map(row),
          "No schedules.",
        ),
      );
      if (schedules.length === PAGE) {
        holder.append(h("p", { class: "hint" }, `The first ${PAGE} schedules by id: GET /schedules?cursor= pages on.`));
      }
    },
    signal,
    fail,
  );
}
