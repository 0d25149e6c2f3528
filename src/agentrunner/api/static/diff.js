// A version's text beside the previous one, line by line: rebuilt from the new text and
// the unified diff the API gives (`GET /agents/{name}/versions/{v}`). Outside the diff's
// hunks both texts are the same lines; inside, removed and added runs are paired row by row.

import { h } from "./dom.js";

const HUNK = /^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@/;

// The first line a hunk covers (a hunk of 0 lines names the line before it).
const first = (start, count) => Number(start) + (count === "0" ? 1 : 0);

function rows(text, diff) {
  const after = text.endsWith("\n") ? text.slice(0, -1).split("\n") : text.split("\n");
  const out = [];
  let oldNo = 1;
  let newNo = 1;
  const same = (until) => {
    for (; newNo < until && newNo <= after.length; newNo += 1, oldNo += 1) out.push(["same", oldNo, after[newNo - 1], newNo, after[newNo - 1]]);
  };
  let removed = [];
  let added = [];
  const pair = () => {
    for (let i = 0; i < Math.max(removed.length, added.length); i += 1) {
      const [gone, come] = [removed[i], added[i]];
      const kind = gone !== undefined && come !== undefined ? "changed" : gone !== undefined ? "removed" : "added";
      out.push([kind, gone !== undefined ? oldNo++ : null, gone, come !== undefined ? newNo++ : null, come]);
    }
    removed = [];
    added = [];
  };
  let inHunk = false;
  for (const line of diff.split("\n")) {
    const hunk = line.match(HUNK);
    if (hunk) {
      pair();
      same(first(hunk[3], hunk[4]));
      oldNo = first(hunk[1], hunk[2]);
      inHunk = true;
    } else if (!inHunk || !line) {
      continue; // the --- and +++ header, or the diff's last newline
    } else if (line[0] === "-") {
      removed.push(line.slice(1));
    } else if (line[0] === "+") {
      added.push(line.slice(1));
    } else if (line[0] === " ") {
      pair();
      out.push(["same", oldNo++, line.slice(1), newNo++, line.slice(1)]);
    }
  }
  pair();
  same(after.length + 1);
  return out;
}

// A table of the previous text (left) and this one (right), or null without a diff.
export function sideBySide(text, diff, { before, after }) {
  if (!diff) return null;
  return h(
    "table",
    { id: "agent-version-side-by-side", class: "side-by-side" },
    h("colgroup", {}, h("col", { class: "line-no" }), h("col"), h("col", { class: "line-no" }), h("col")),
    h("thead", {}, h("tr", {}, h("th", { colspan: 2 }, before), h("th", { colspan: 2 }, after))),
    h(
      "tbody",
      {},
      rows(text, diff).map(([kind, oldNo, oldText, newNo, newText]) =>
        h(
          "tr",
          { class: kind, dataset: { kind } },
          h("td", { class: "line-no" }, oldNo ?? ""),
          h("td", { class: "old" }, h("code", {}, oldText ?? "")),
          h("td", { class: "line-no" }, newNo ?? ""),
          h("td", { class: "new" }, h("code", {}, newText ?? "")),
        ),
      ),
    ),
  );
}
