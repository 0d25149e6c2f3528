"""The one place errors become HTTP answers: `{"error": {"code", "message", "trace_id"}}`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentrunner.domain.errors import AgentRunnerError
from agentrunner.tracing import current_trace_id

# Every code of the error tree has its status here (tests/unit/test_error_statuses.py walks
# the tree); an unknown code still answers 500, and only "internal_error" means to.
STATUS_BY_CODE: dict[str, int] = {
    "bad_request": 400,
    "egress_refused": 400,
    "invalid_json": 400,
    "unauthorized": 401,
    "topic_reserved": 403,
    "admin_only": 403,
    "not_found": 404,
    "agent_not_found": 404,
    "agent_version_not_found": 404,
    "execution_not_found": 404,
    "state_not_found": 404,
    "dead_letter_not_found": 404,
    "schedule_not_found": 404,
    "plan_run_not_found": 404,
    "clarification_not_found": 404,
    "eval_suite_not_found": 404,
    "eval_run_not_found": 404,
    "method_not_allowed": 405,
    "agent_unavailable": 409,
    "conflict": 409,
    "session_busy": 409,
    "idempotency_key_reused": 409,
    # An execution or plan run that already ended so: asking more of it conflicts with its state.
    "cancelled": 409,
    "plan_rejected": 409,
    "payload_too_large": 413,
    "config_invalid": 422,
    "plan_invalid": 422,
    "validation_error": 422,
    "step_out_of_range": 422,
    "input_invalid": 422,
    "llm_rate_limited": 429,
    "budget_exceeded": 429,
    "too_many_streams": 429,
    "llm_error": 502,
    "llm_unavailable": 502,
    "llm_auth": 502,
    "llm_bad_request": 502,
    "slack_error": 502,
    "slack_unavailable": 502,
    "slack_rejected": 502,
    # A participant of a plan run failed: like a provider's failure, upstream of the platform.
    "step_failed": 502,
    # A tool call a crash cut short, failed rather than repeated: the tool's side is unknown.
    "tool_outcome_unknown": 502,
    "output_invalid": 502,
    # The answer failed the agent's online checks (on_check_failure: fail): the model's side, as above.
    "check_failed": 502,
    # An agent's consumer given up on after its restarts: that service is not there now.
    "consumer_unresponsive": 503,
    "dependency_unavailable": 503,
    # The work (model and tool calls, or the human a step asked) did not end in its time.
    "timed_out": 504,
    "clarification_timed_out": 504,
    # A bug of ours, not the caller's: the one code that means 500.
    "internal_error": 500,
}
# What a 503 tells the client to wait: the node has already waited out a restart of a
# second or two (the state store's reconnect window) before answering it.
DEPENDENCY_RETRY_AFTER_SECONDS = 5

_CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def error_response(status: int, code: str, message: str, **details: Any) -> JSONResponse:
    """The JSON error shape of ARCHITECTURE §9."""
    body: dict[str, Any] = {"code": code, "message": message, "trace_id": current_trace_id()}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status)


def error_answer(exc: AgentRunnerError) -> JSONResponse:
    """The answer to a request that raised one of our errors: the status of its code and,
    when a dependency is down (503), a `Retry-After`."""
    status = STATUS_BY_CODE.get(exc.code, 500)
    response = error_response(status, exc.code, exc.message)
    if status == 503:
        response.headers["retry-after"] = str(DEPENDENCY_RETRY_AFTER_SECONDS)
    return response


async def _agentrunner_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AgentRunnerError)
    return error_answer(exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in errors):
        detail = errors[0].get("ctx", {}).get("error", "")
        return error_response(400, "invalid_json", f"request body is not valid JSON: {detail}".rstrip(": "))
    problems = [{"field": ".".join(str(part) for part in error["loc"]), "message": error["msg"]} for error in errors]
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return error_response(422, "validation_error", f"invalid request: {summary}", fields=problems)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODE_BY_STATUS.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


class ErrorBody(BaseModel):
    """What went wrong: a stable code, a message for people, the request's trace id."""

    code: str
    message: str
    trace_id: str | None
    details: dict[str, Any] | None = None


class ErrorAnswer(BaseModel):
    """Every error answer of every role."""

    error: ErrorBody


# The error answers any operation may give (auth, limits, bad input, missing things,
# conflicts, dependencies down), documented on every operation of every role.
DOCUMENTED_ERRORS: dict[int, str] = {
    400: "Bad request or invalid JSON",
    401: "Missing or wrong API key (when auth is on)",
    403: "Refused (a topic reserved for agentrunner itself, an admin's action with a tenant's key, ...)",
    404: "Not found",
    409: "Conflict (unavailable agent, already ended, stale version, ...)",
    413: "Request body over MAX_REQUEST_BYTES",
    422: "Invalid request (fields named in details)",
    429: "Rate limited (Retry-After says when to try again)",
    503: "A dependency (database, event bus, cache) does not answer (Retry-After says when to try again)",
}


def install_error_handlers(app: FastAPI) -> None:
    """Make every error of `app` answer in the one JSON shape, and say so in its OpenAPI."""
    app.add_exception_handler(AgentRunnerError, _agentrunner_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(ErrorAnswer.model_json_schema(ref_template="#/components/schemas/{model}")["$defs"])
            components["ErrorAnswer"] = ErrorAnswer.model_json_schema(ref_template="#/components/schemas/{model}")
            components["ErrorAnswer"].pop("$defs", None)
            answer = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorAnswer"}}}}
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    responses = operation.setdefault("responses", {})
                    for status, description in DOCUMENTED_ERRORS.items():
                        responses[str(status)] = {"description": description, **answer}
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
