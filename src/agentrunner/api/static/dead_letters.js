// Dead letters: events the bus gave up on, with their error; replay or forget each.

import { get, post, remove } from "./api.js";
import { every, h, json, shortId, table, time } from "./dom.js";

export async function list(root, { signal, fail }) {
  const holder = h("div");
  const replayed = h("input", { type: "checkbox", id: "include-replayed" });
  const refresh = async () => {
    const query = new URLSearchParams({ include_replayed: String(replayed.checked), limit: "200" });
    const letters = await get(`dead-letters?${query}`, signal);
    holder.replaceChildren(
      table(
        "dead-letters",
        ["Id", "Queue", "Topic", "Error", "Attempts", "Dead since", "Replayed", ""],
        letters.map((letter) => row(letter, refresh, fail)),
        "No dead letters.",
      ),
    );
  };
  replayed.addEventListener("change", () => refresh().catch(fail));
  root.append(
    h("h2", {}, "Dead letters"),
    h("label", { class: "filter" }, replayed, " include replayed"),
    holder,
  );
  await every(5000, refresh, signal, fail);
}

function row(letter, refresh, fail) {
  const act = (work) => async (event) => {
    event.target.disabled = true;
    try {
      await work();
      await refresh();
    } catch (error) {
      fail(error);
    }
  };
  const replay = act(() => post(`dead-letters/${encodeURIComponent(letter.id)}/replay`));
  const forget = act(async () => {
    if (window.confirm(`Forget dead letter ${letter.id}? It cannot be replayed afterwards.`)) {
      await remove(`dead-letters/${encodeURIComponent(letter.id)}`);
    }
  });
  return h(
    "tr",
    { dataset: { deadLetter: letter.id } },
    h("td", { title: letter.id }, shortId(letter.id)),
    h("td", {}, letter.queue),
    h("td", {}, letter.topic),
    h("td", { class: "error-text" }, letter.error, h("details", {}, h("summary", {}, "event"), json(letter.event))),
    h("td", {}, String(letter.attempts)),
    h("td", {}, time(letter.created_at)),
    h("td", {}, time(letter.replayed_at)),
    h(
      "td",
      { class: "actions" },
      h("button", { type: "button", class: "replay", onclick: replay }, "Replay"),
      h("button", { type: "button", class: "danger", onclick: forget }, "Forget"),
    ),
  );
}
