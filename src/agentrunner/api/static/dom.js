// Building the page from data: elements and text nodes only, never HTML strings, so
// nothing an agent or a user wrote can run as markup.

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export function table(id, columns, rows, empty = "Nothing yet.") {
  const body = h("tbody", {}, rows);
  if (!rows.length) body.append(h("tr", { class: "empty" }, h("td", { colspan: columns.length }, empty)));
  return h("table", { id }, h("thead", {}, h("tr", {}, columns.map((column) => h("th", {}, column)))), body);
}

export function status(value) {
  return h("span", { class: `status status-${value || "unknown"}`, "data-status": value || "" }, value || "-");
}

export function time(iso) {
  if (!iso) return "-";
  const date = new Date(iso);
  return h("time", { datetime: iso, title: iso }, date.toLocaleString());
}

export function seconds(fromIso, toIso) {
  if (!fromIso) return "-";
  const end = toIso ? new Date(toIso) : new Date();
  return `${((end - new Date(fromIso)) / 1000).toFixed(1)} s`;
}

export function cost(usd) {
  return usd === null || usd === undefined ? "-" : `$${Number(usd).toFixed(6)}`;
}

export function tokens(usage) {
  return usage ? `${usage.input_tokens} in / ${usage.output_tokens} out` : "-";
}

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

export function fields(pairs) {
  return h(
    "dl",
    { class: "fields" },
    pairs.filter(([, value]) => value !== undefined).map(([name, value]) => [h("dt", {}, name), h("dd", {}, value ?? "-")]),
  );
}

export function shortId(id) {
  return id && id.length > 12 ? `${id.slice(0, 12)}…` : id;
}

export function link(href, text, attributes = {}) {
  return h("a", { href, ...attributes }, text);
}

// Run `work` now and then every `ms` until `signal` aborts; errors go to `onError`.
export function every(ms, work, signal, onError) {
  let timer = null;
  const run = async () => {
    if (signal.aborted) return;
    try {
      await work();
    } catch (error) {
      if (!signal.aborted) onError(error);
    }
    if (!signal.aborted) timer = setTimeout(run, ms);
  };
  signal.addEventListener("abort", () => clearTimeout(timer));
  return run();
}
