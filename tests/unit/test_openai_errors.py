"""Every exception the `openai` SDK exports becomes an agentrunner LLMError, by its meaning."""

from __future__ import annotations

import inspect

import httpx2  # the SDK's own httpx: its exceptions hold httpx2 requests and responses
import openai
import pytest
from openai.types.chat import ChatCompletion

from agentrunner.adapters.providers.openai import translate_error
from agentrunner.domain.errors import (
    LLMAuthError,
    LLMBadRequestError,
    LLMError,
    LLMRateLimitError,
    LLMUnavailableError,
)
from agentrunner.domain.llm import LLMRequest, Message
from tests.fakes.openai_server import running

URL = "https://api.openai.com/v1/chat/completions"

# Exported, but raised only by `client.webhooks.unwrap`, which the adapter never calls: it
# is a ValueError, outside the OpenAIError tree the adapter catches.
NOT_RAISED_BY_CALLS = {openai.InvalidWebhookSignatureError}

STATUS_OF: dict[type[openai.APIStatusError], int] = {
    openai.BadRequestError: 400,
    openai.AuthenticationError: 401,
    openai.OAuthError: 401,
    openai.PermissionDeniedError: 403,
    openai.NotFoundError: 404,
    openai.ConflictError: 409,
    openai.UnprocessableEntityError: 422,
    openai.RateLimitError: 429,
    openai.InternalServerError: 500,
}


def _exported_exceptions() -> list[type[BaseException]]:
    found = {
        member
        for name in openai.__all__
        if inspect.isclass(member := getattr(openai, name)) and issubclass(member, BaseException)
    }
    return sorted(found, key=lambda cls: cls.__name__)


def _sdk_errors() -> list[type[openai.OpenAIError]]:
    return [cls for cls in _exported_exceptions() if issubclass(cls, openai.OpenAIError)]


def _response(status: int, headers: dict[str, str] | None = None) -> httpx2.Response:
    body = {"error": {"message": f"status {status}", "type": "error", "param": None, "code": None}}
    return httpx2.Response(status, headers=headers, json=body, request=httpx2.Request("POST", URL))


def _instance(cls: type[openai.OpenAIError]) -> openai.OpenAIError:
    """An instance built the way the SDK builds one of that class."""
    request = httpx2.Request("POST", URL)
    if issubclass(cls, openai.OAuthError):
        response = _response(401)
        return cls(response=response, body={"error": "invalid_grant", "error_description": "token expired"})
    if issubclass(cls, openai.APIStatusError):
        response = _response(STATUS_OF.get(cls, 500))
        return cls(f"Error code: {response.status_code}", response=response, body=response.json())
    if issubclass(cls, openai.APITimeoutError):
        return cls(request)
    if issubclass(cls, openai.APIConnectionError):
        return cls(request=request)
    if issubclass(cls, openai.APIResponseValidationError):
        return cls(httpx2.Response(200, text="<html>", request=request), "<html>")
    if issubclass(cls, openai.APIError):
        return cls("something failed", request, body=None)
    if issubclass(cls, openai.LengthFinishReasonError):
        completion = ChatCompletion.model_construct(
            id="chatcmpl-1", choices=[], created=0, model="gpt-4o-mini", object="chat.completion", usage=None
        )
        return cls(completion=completion)
    if issubclass(cls, openai.ContentFilterFinishReasonError):
        return cls()
    if issubclass(cls, openai.WebSocketConnectionClosedError):
        return cls("connection closed", unsent_messages=[])
    return cls("something failed")


def test_the_walk_finds_the_sdk_exceptions() -> None:
    names = {cls.__name__ for cls in _exported_exceptions()}

    assert {"APIConnectionError", "APITimeoutError", "RateLimitError", "AuthenticationError", "OpenAIError"} <= names


def test_every_exported_exception_is_caught_by_the_adapter() -> None:
    # The adapter catches `openai.OpenAIError` around every call: an exported exception
    # outside that tree would escape it untranslated.
    for cls in _exported_exceptions():
        if cls not in NOT_RAISED_BY_CALLS:
            assert issubclass(cls, openai.OpenAIError), f"openai.{cls.__name__} escapes the adapter"


@pytest.mark.parametrize("cls", _sdk_errors(), ids=lambda cls: cls.__name__)
def test_every_sdk_exception_is_translated_to_an_llm_error(cls: type[openai.OpenAIError]) -> None:
    error = translate_error(_instance(cls))

    assert isinstance(error, LLMError)
    assert type(error) is not LLMError  # always one of the four kinds the runtime acts on
    assert error.message.startswith("openai: ")


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (openai.BadRequestError, LLMBadRequestError),
        (openai.AuthenticationError, LLMAuthError),
        (openai.OAuthError, LLMAuthError),
        (openai.PermissionDeniedError, LLMAuthError),
        (openai.NotFoundError, LLMBadRequestError),
        (openai.ConflictError, LLMBadRequestError),
        (openai.UnprocessableEntityError, LLMBadRequestError),
        (openai.RateLimitError, LLMRateLimitError),
        (openai.InternalServerError, LLMUnavailableError),
        (openai.APIStatusError, LLMUnavailableError),
        (openai.APIConnectionError, LLMUnavailableError),
        (openai.APITimeoutError, LLMUnavailableError),
        (openai.APIResponseValidationError, LLMUnavailableError),
        (openai.APIError, LLMUnavailableError),
        (openai.LengthFinishReasonError, LLMBadRequestError),
        (openai.ContentFilterFinishReasonError, LLMBadRequestError),
        (openai.WebSocketConnectionClosedError, LLMUnavailableError),
        (openai.WebSocketQueueFullError, LLMUnavailableError),
        (openai.OpenAIError, LLMUnavailableError),
    ],
    ids=lambda value: value.__name__,
)
def test_sdk_exception_maps_to_the_error_kind_of_its_meaning(
    cls: type[openai.OpenAIError], expected: type[LLMError]
) -> None:
    assert type(translate_error(_instance(cls))) is expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, LLMBadRequestError), (404, LLMBadRequestError), (418, LLMBadRequestError), (502, LLMUnavailableError)],
)
def test_a_bare_status_error_maps_by_its_status(status: int, expected: type[LLMError]) -> None:
    response = _response(status)

    assert type(translate_error(openai.APIStatusError("failed", response=response, body=None))) is expected


def test_a_bad_key_says_which_setting_to_check() -> None:
    error = translate_error(_instance(openai.AuthenticationError))

    assert "OPENAI_API_KEY" in error.message


@pytest.mark.parametrize(("header", "retry_after"), [("2", 2.0), (None, None)])
def test_a_rate_limit_carries_the_vendors_retry_after(header: str | None, retry_after: float | None) -> None:
    response = _response(429, {"retry-after": header} if header else None)
    error = translate_error(openai.RateLimitError("slow down", response=response, body=None))

    assert isinstance(error, LLMRateLimitError)
    assert error.retryable
    assert error.context["retry_after"] == retry_after


async def test_provider_raises_the_translated_error_from_the_sdk_exception() -> None:
    request = LLMRequest(model="gpt-4o-mini", messages=[Message(role="user", content="Hi")])
    with running() as fake:
        fake.fail_with(401)
        provider = fake.provider()
        try:
            with pytest.raises(LLMAuthError) as caught:
                await provider.complete(request)
        finally:
            await provider.close()

    assert isinstance(caught.value.__cause__, openai.AuthenticationError)
