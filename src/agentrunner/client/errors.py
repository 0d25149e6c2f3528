"""What the client raises. One tree:

    ClientError
    ├── APIError                 the API answered with an error: its `code`, `message`, `status`
    │   ├── BadRequestError      400, 413, 422 (invalid input, too large)
    │   ├── AuthenticationError  401 (no key, a wrong key)
    │   ├── PermissionDeniedError 403 (an admin's action, a reserved topic)
    │   ├── NotFoundError        404 (unknown agent, execution, plan run, ...)
    │   ├── ConflictError        409 (unavailable agent, ended already, key reused, ...)
    │   ├── RateLimitedError     429 (a budget, a rate limit; `retry_after`)
    │   └── ServerError          5xx (a provider's failure, a dependency down, a bug)
    ├── ConnectionFailedError    nobody answered within the retry window
    └── WaitTimeoutError         an execution had not ended when the wait was over

Match the class for the status, or `code` (the API's stable code, `agent_not_found`,
`budget_exceeded`, ...) for the cause.
"""

from __future__ import annotations

from typing import Any

import httpx


class ClientError(Exception):
    """Every error of `agentrunner.client`."""


class APIError(ClientError):
    """The API answered `status` with its error shape: `{"error": {"code", "message", "trace_id"}}`.
    An answer in another shape (a proxy's page) has code `http_error` and its text as message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        trace_id: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code} ({status}): {message}")
        self.status = status
        self.code = code
        self.message = message
        self.trace_id = trace_id
        self.details = details
        self.retry_after = retry_after

    @property
    def from_api(self) -> bool:
        """Whether the answer had the API's error shape (else a proxy or another server said it)."""
        return self.code != HTTP_ERROR


class BadRequestError(APIError):
    """400, 413 or 422: the request was refused as it is; `details` names the fields of a 422."""


class AuthenticationError(APIError):
    """401: no API key, or one the platform does not know."""


class PermissionDeniedError(APIError):
    """403: the key may not do this."""


class NotFoundError(APIError):
    """404: no such agent, execution, plan run (or another tenant's)."""


class ConflictError(APIError):
    """409: not in a state for this (unavailable agent, ended, not waiting, key reused)."""


class RateLimitedError(APIError):
    """429: a rate limit or budget; `retry_after` says when to try again, when known."""


class ServerError(APIError):
    """5xx: a provider or dependency failed, or the platform did."""


class ConnectionFailedError(ClientError):
    """No answer from `url` (refused, reset, timed out) within the retry window."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"no agentrunner answers at {url} ({reason})")
        self.url = url
        self.reason = reason


class WaitTimeoutError(ClientError, TimeoutError):
    """The execution had not ended (nor stopped to wait for a human) when the wait was over."""

    def __init__(self, execution_id: str, timeout: float) -> None:
        super().__init__(f"execution {execution_id} had not ended after {timeout:g} s")
        self.execution_id = execution_id
        self.timeout = timeout


HTTP_ERROR = "http_error"
_CLASS_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    422: BadRequestError,
    429: RateLimitedError,
}


def retry_after_of(response: httpx.Response) -> float | None:
    """The seconds a `Retry-After` header asks to wait (None: absent, or a date)."""
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def api_error_body(response: httpx.Response) -> dict[str, Any] | None:
    """The `error` object of an answer in the API's error shape, else None."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str):
        return error
    return None


def error_of(response: httpx.Response) -> APIError:
    """The exception for an error answer (status >= 400) or a redirect (not followed: an
    `APIError` with code `http_error` naming where it pointed), its body read."""
    status = response.status_code
    kind = _CLASS_BY_STATUS.get(status, ServerError if status >= 500 else APIError)
    if 300 <= status < 400:
        where = response.headers.get("location", "")[:500]
        return APIError(status, HTTP_ERROR, f"redirected to {where!r}: not followed (the API key goes nowhere else)")
    error = api_error_body(response)
    if error is None:
        return kind(status, HTTP_ERROR, response.text[:2000], retry_after=retry_after_of(response))
    details = error.get("details")
    return kind(
        status,
        error["code"],
        error["message"],
        trace_id=error.get("trace_id"),
        details=details if isinstance(details, dict) else None,
        retry_after=retry_after_of(response),
    )
