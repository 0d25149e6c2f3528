// The dashboard's shell: asks for the API key when the API wants one, routes #/… to a
// view, and stops the previous view's polling and streams when another is shown.

import { ApiError, apiKey, forgetApiKey, get, setApiKey } from "./api.js";
import * as agents from "./agents.js";
import * as deadLetters from "./dead_letters.js";
import * as evals from "./evals.js";
import * as executions from "./executions.js";
import * as overview from "./overview.js";
import * as planRuns from "./plan_runs.js";
import * as schedules from "./schedules.js";

const ROUTES = [
  [/^#\/overview$/, overview.show],
  [/^#\/agents$/, agents.list],
  [/^#\/agents\/([^/]+)$/, agents.detail],
  [/^#\/executions$/, executions.list],
  [/^#\/executions\/([^/]+)$/, executions.detail],
  [/^#\/plan-runs$/, planRuns.list],
  [/^#\/plan-runs\/([^/]+)$/, planRuns.detail],
  [/^#\/evals$/, evals.list],
  [/^#\/evals\/([^/]+)$/, evals.detail],
  [/^#\/schedules$/, schedules.list],
  [/^#\/dead-letters$/, deadLetters.list],
];

const element = (id) => document.getElementById(id);
let current = null; // the shown view's AbortController

function connection(text, state) {
  const indicator = element("connection");
  indicator.textContent = text;
  indicator.dataset.state = state;
}

function problem(error) {
  if (error instanceof ApiError && error.status === 401) {
    const refused = Boolean(apiKey());
    forgetApiKey();
    askForKey(refused ? "The API refused this key." : "");
    return;
  }
  const shown = element("problem");
  shown.textContent = error instanceof ApiError ? `${error.status} ${error.code}: ${error.message}` : String(error);
  shown.hidden = false;
  connection("error", "error");
}

function askForKey(message) {
  if (current) current.abort();
  element("view").replaceChildren();
  element("key-form").hidden = false;
  element("key-error").textContent = message;
  element("forget-key").hidden = true;
  connection("API key needed", "locked");
  element("api-key").focus();
}

async function show() {
  if (current) current.abort();
  current = new AbortController();
  const hash = location.hash && location.hash !== "#/" ? location.hash : "#/executions";
  const [path, query] = hash.split("?", 2);
  element("problem").hidden = true;
  for (const anchor of element("nav").querySelectorAll("a")) {
    anchor.classList.toggle("active", path.startsWith(anchor.getAttribute("href")));
  }
  const view = element("view");
  view.replaceChildren();
  const route = ROUTES.find(([pattern]) => pattern.test(path));
  if (!route) {
    view.textContent = `No page at ${hash}.`;
    return;
  }
  const params = path.match(route[0]).slice(1).map(decodeURIComponent);
  const context = { params, query: new URLSearchParams(query || ""), signal: current.signal, fail: problem };
  try {
    await route[1](view, context);
  } catch (error) {
    if (!context.signal.aborted) problem(error);
  }
}

async function connect() {
  try {
    await get("agents");
  } catch (error) {
    problem(error);
    return;
  }
  element("key-form").hidden = true;
  element("forget-key").hidden = !apiKey();
  connection("connected", "ok");
  await show();
}

element("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = element("api-key").value.trim();
  if (!key) return;
  setApiKey(key);
  element("api-key").value = "";
  connect();
});

element("forget-key").addEventListener("click", () => {
  forgetApiKey();
  askForKey("");
});

window.addEventListener("hashchange", () => {
  if (element("key-form").hidden) show();
});

connect();
