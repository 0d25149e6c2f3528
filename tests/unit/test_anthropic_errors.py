"""Every exception the `anthropic` SDK exports becomes an agentrunner LLMError, by status."""

from __future__ import annotations

import inspect
from typing import Any

import anthropic
import httpx2  # the SDK's own httpx: its exceptions hold httpx2 requests and responses
import pytest

from agentrunner.adapters.providers.anthropic import translate_error
from agentrunner.domain.errors import (
    LLMAuthError,
    LLMBadRequestError,
    LLMError,
    LLMRateLimitError,
    LLMUnavailableError,
)
from agentrunner.domain.llm import LLMRequest, Message
from tests.fakes.anthropic_server import running

URL = "https://api.anthropic.com/v1/messages"

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _exported_exceptions() -> list[type[anthropic.AnthropicError]]:
    found = {
        value
        for value in vars(anthropic).values()
        if inspect.isclass(value) and issubclass(value, anthropic.AnthropicError)
    }
    return sorted(found, key=lambda cls: cls.__name__)


def _body(status: int) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": f"a {kind}"}, "request_id": "req_test"}


def _response(status: int, headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.Response(status, headers=headers, json=_body(status), request=httpx2.Request("POST", URL))


def _status_of(cls: type[anthropic.APIStatusError]) -> int:
    status = getattr(cls, "status_code", None)
    return status if isinstance(status, int) else 500


def _instance(cls: type[anthropic.AnthropicError]) -> anthropic.AnthropicError:
    """An instance built the way the SDK builds one of that class."""
    request = httpx2.Request("POST", URL)
    if issubclass(cls, anthropic.APIStatusError):
        response = _response(_status_of(cls))
        return cls(f"Error code: {response.status_code}", response=response, body=response.json())
    if issubclass(cls, anthropic.APITimeoutError):
        return cls(request)
    if issubclass(cls, anthropic.APIConnectionError):
        return cls(request=request)
    if issubclass(cls, anthropic.APIResponseValidationError):
        return cls(httpx2.Response(200, text="<html>", request=request), "<html>")
    if issubclass(cls, anthropic.APIError):
        return cls("something failed", request, body=None)
    return cls("something failed")


def test_the_walk_finds_the_sdk_exceptions() -> None:
    names = {cls.__name__ for cls in _exported_exceptions()}
    assert {"APIConnectionError", "APITimeoutError", "RateLimitError", "OverloadedError", "CredentialsError"} <= names


@pytest.mark.parametrize("cls", _exported_exceptions(), ids=lambda cls: cls.__name__)
def test_every_sdk_exception_is_translated_to_an_llm_error(cls: type[anthropic.AnthropicError]) -> None:
    error = translate_error(_instance(cls))

    assert isinstance(error, LLMError)
    assert type(error) is not LLMError  # always one of the four kinds the runtime acts on
    assert error.message.startswith("anthropic: ")


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (anthropic.BadRequestError, LLMBadRequestError),
        (anthropic.AuthenticationError, LLMAuthError),
        (anthropic.PaymentRequiredError, LLMAuthError),
        (anthropic.PermissionDeniedError, LLMAuthError),
        (anthropic.NotFoundError, LLMBadRequestError),
        (anthropic.RequestTimeoutError, LLMUnavailableError),
        (anthropic.ContentTooLargeError, LLMBadRequestError),
        (anthropic.UnprocessableEntityError, LLMBadRequestError),
        (anthropic.RateLimitError, LLMRateLimitError),
        (anthropic.InternalServerError, LLMUnavailableError),
        (anthropic.ServiceUnavailableError, LLMUnavailableError),
        (anthropic.GatewayTimeoutError, LLMUnavailableError),
        (anthropic.OverloadedError, LLMUnavailableError),
        (anthropic.APIConnectionError, LLMUnavailableError),
        (anthropic.APITimeoutError, LLMUnavailableError),
        (anthropic.APIResponseValidationError, LLMUnavailableError),
        (anthropic.CredentialsError, LLMAuthError),
    ],
    ids=lambda value: value.__name__,
)
def test_sdk_exception_maps_to_the_error_kind_of_its_status(
    cls: type[anthropic.AnthropicError], expected: type[LLMError]
) -> None:
    assert type(translate_error(_instance(cls))) is expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, LLMBadRequestError),
        (401, LLMAuthError),
        (403, LLMAuthError),
        (404, LLMBadRequestError),
        (413, LLMBadRequestError),
        (422, LLMBadRequestError),
        (429, LLMRateLimitError),
        (500, LLMUnavailableError),
        (503, LLMUnavailableError),
        (529, LLMUnavailableError),
    ],
)
def test_status_error_maps_by_status_and_keeps_it(status: int, expected: type[LLMError]) -> None:
    response = _response(status)
    error = translate_error(anthropic.APIStatusError("failed", response=response, body=response.json()))

    assert type(error) is expected
    if expected is not LLMRateLimitError:
        assert error.context["status"] == status


def test_rate_limit_carries_retry_after_from_the_header() -> None:
    response = _response(429, {"retry-after": "1"})
    error = translate_error(anthropic.RateLimitError("slow down", response=response, body=response.json()))

    assert isinstance(error, LLMRateLimitError)
    assert error.retryable
    assert error.context["retry_after"] == 1.0


@pytest.mark.parametrize("header", [None, "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_rate_limit_without_seconds_has_no_retry_after(header: str | None) -> None:
    response = _response(429, {"retry-after": header} if header else None)
    error = translate_error(anthropic.RateLimitError("slow down", response=response, body=response.json()))

    assert isinstance(error, LLMRateLimitError)
    assert "retry_after" not in error.context


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [
        ("overloaded_error", LLMUnavailableError),
        ("api_error", LLMUnavailableError),
        ("rate_limit_error", LLMRateLimitError),
        ("invalid_request_error", LLMBadRequestError),
        ("authentication_error", LLMAuthError),
        ("some_future_error", LLMUnavailableError),
    ],
)
def test_error_event_inside_a_200_stream_maps_by_its_type(error_type: str, expected: type[LLMError]) -> None:
    # The SDK raises an `error` event of a stream with the stream's own 200 response.
    response = httpx2.Response(200, request=httpx2.Request("POST", URL))
    body = {"type": "error", "error": {"type": error_type, "message": "mid-stream failure"}}

    assert type(translate_error(anthropic.APIStatusError(str(body), response=response, body=body))) is expected


async def test_provider_raises_the_translated_error_from_the_sdk_exception() -> None:
    request = LLMRequest(model="claude-3-haiku-20240307", messages=[Message(role="user", content="Hi")])
    with running() as fake:
        fake.fail_with(529)
        provider = fake.provider()
        try:
            with pytest.raises(LLMUnavailableError) as caught:
                await provider.complete(request)
        finally:
            await provider.close()

    assert isinstance(caught.value.__cause__, anthropic.OverloadedError)
