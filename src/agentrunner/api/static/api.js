// Calls to the orchestrator's API beside the page, with the API key when one is set.
// The key lives in this tab's sessionStorage and travels only in the X-API-Key header:
// never in a URL, where proxies and access logs would keep it.

const KEY_STORAGE = "agentrunner.api-key";

// The page is served at <base>/ui/: the API is at <base>/ (also behind a path prefix).
export const apiBase = new URL("../", document.baseURI);

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export function forgetApiKey() {
  sessionStorage.removeItem(KEY_STORAGE);
}

function headers(extra) {
  // X-AgentRunner-Client: a header no cross-site form can send, which a platform with
  // auth off asks of every request that changes something.
  const all = { Accept: "application/json", "X-AgentRunner-Client": "dashboard", ...extra };
  const key = apiKey();
  if (key) all["X-API-Key"] = key;
  return all;
}

async function failure(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  const error = (body && body.error) || {};
  const detail = error.message || (body && typeof body.detail === "string" && body.detail) || text;
  return new ApiError(response.status, error.code || `http_${response.status}`, detail || response.statusText);
}

export async function request(method, path, body, signal) {
  const init = { method, headers: headers(), cache: "no-store", credentials: "omit", signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(new URL(path, apiBase), init);
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, signal) => request("GET", path, undefined, signal);
export const post = (path, body = {}) => request("POST", path, body);
export const remove = (path) => request("DELETE", path);

// Server-sent events read with fetch: EventSource cannot send the key's header.
// Calls onEvent(name, data) per event until the stream ends or `signal` aborts.
export async function streamEvents(path, onEvent, signal) {
  const response = await fetch(new URL(path, apiBase), {
    headers: headers({ Accept: "text/event-stream" }),
    cache: "no-store",
    credentials: "omit",
    signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    // Lines end in \r\n, \n or \r; a \r at the end may be half of a \r\n still to come.
    buffer = (buffer + value).replace(/\r\n|\r(?!$)/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      dispatch(block, onEvent);
    }
  }
}

function dispatch(block, onEvent) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (data.length) onEvent(name, JSON.parse(data.join("\n")));
}
