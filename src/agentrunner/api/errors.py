"""The one place errors become HTTP answers: `{"error": {"code", "message", "trace_id"}}`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentrunner.domain.errors import AgentRunnerError
from agentrunner.tracing import current_trace_id

STATUS_BY_CODE: dict[str, int] = {
    "bad_request": 400,
    "invalid_json": 400,
    "unauthorized": 401,
    "not_found": 404,
    "agent_not_found": 404,
    "execution_not_found": 404,
    "state_not_found": 404,
    "dead_letter_not_found": 404,
    "schedule_not_found": 404,
    "method_not_allowed": 405,
    "agent_unavailable": 409,
    "conflict": 409,
    "payload_too_large": 413,
    "config_invalid": 422,
    "validation_error": 422,
    "llm_rate_limited": 429,
    "llm_error": 502,
    "llm_unavailable": 502,
    "llm_auth": 502,
    "llm_bad_request": 502,
    "slack_error": 502,
    "slack_unavailable": 502,
    "slack_rejected": 502,
    "dependency_unavailable": 503,
}
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


async def _agentrunner_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AgentRunnerError)
    return error_response(STATUS_BY_CODE.get(exc.code, 500), exc.code, exc.message)


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


def install_error_handlers(app: FastAPI) -> None:
    """Make every error of `app` answer in the one JSON shape."""
    app.add_exception_handler(AgentRunnerError, _agentrunner_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
