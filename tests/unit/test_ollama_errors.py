"""Every exception the `ollama` SDK lets escape maps to one agentrunner error (no network)."""

from __future__ import annotations

import inspect
import json

import httpx
import ollama
import pydantic
import pytest
from ollama import ChatResponse

from agentrunner.adapters.providers.ollama import SDK_ERRORS, translate_error
from agentrunner.domain.errors import (
    LLMAuthError,
    LLMBadRequestError,
    LLMError,
    LLMRateLimitError,
    LLMUnavailableError,
)

_REQUEST = httpx.Request("POST", "http://127.0.0.1:11434/api/chat")


def _response_error(status: int, body: str = '{"error": "boom"}', headers: dict[str, str] | None = None) -> Exception:
    """A ResponseError raised the way the SDK raises it: inside `except HTTPStatusError`, `from None`."""
    response = httpx.Response(status, text=body, headers=headers, request=_REQUEST)
    try:
        try:
            response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            raise ollama.ResponseError(exc.response.text, exc.response.status_code) from None
    except ollama.ResponseError as raised:
        return raised
    raise AssertionError("raise_for_status did not raise")


def _validation_error(model: type[pydantic.BaseModel], data: object) -> pydantic.ValidationError:
    with pytest.raises(pydantic.ValidationError) as caught:
        model.model_validate(data)
    return caught.value


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, LLMRateLimitError),
        (500, LLMUnavailableError),
        (502, LLMUnavailableError),
        (503, LLMUnavailableError),
        (408, LLMUnavailableError),
        (401, LLMAuthError),
        (403, LLMAuthError),
        (400, LLMBadRequestError),
        (404, LLMBadRequestError),
        (413, LLMBadRequestError),
    ],
)
def test_a_response_error_maps_by_its_status(status: int, expected: type[LLMError]) -> None:
    error = translate_error(_response_error(status, '{"error": "model \'llama3.1\' not found"}'))

    assert type(error) is expected
    assert "ollama:" in error.message


def test_an_error_line_in_the_middle_of_a_stream_is_unavailable() -> None:
    # The SDK raises ResponseError(err) without a status (-1) for `{"error": ...}` after a 200.
    error = translate_error(ollama.ResponseError("llama runner process has terminated"))

    assert isinstance(error, LLMUnavailableError)
    assert error.retryable


def test_a_rate_limit_carries_the_vendors_retry_after() -> None:
    error = translate_error(_response_error(429, headers={"retry-after": "2"}))

    assert isinstance(error, LLMRateLimitError)
    assert error.context["retry_after"] == pytest.approx(2.0)


def test_a_rate_limit_without_retry_after_says_none() -> None:
    error = translate_error(_response_error(429))

    assert isinstance(error, LLMRateLimitError)
    assert error.context["retry_after"] is None


def test_a_missing_model_says_how_to_get_it() -> None:
    error = translate_error(_response_error(404, '{"error": "model \'x\' not found"}'))

    assert "model 'x' not found" in error.message
    assert "ollama pull" in error.message
    assert error.context["status"] == 404


def test_a_request_error_is_a_bad_request() -> None:
    assert isinstance(translate_error(ollama.RequestError("must provide a model")), LLMBadRequestError)


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("All connection attempts failed", request=_REQUEST),
        httpx.ConnectTimeout("timed out", request=_REQUEST),
        httpx.ReadTimeout("timed out", request=_REQUEST),
        httpx.WriteTimeout("timed out", request=_REQUEST),
        httpx.PoolTimeout("timed out", request=_REQUEST),
        httpx.ReadError("connection reset", request=_REQUEST),
        httpx.RemoteProtocolError("peer closed connection without sending complete message body", request=_REQUEST),
        ConnectionError("Failed to connect to Ollama."),
        ConnectionRefusedError(111, "Connection refused"),
        json.JSONDecodeError("Expecting value", "<html>", 0),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_transport_failures_and_garbled_answers_are_unavailable(exc: Exception) -> None:
    assert isinstance(translate_error(exc), LLMUnavailableError)


@pytest.mark.parametrize(
    "exc",
    [ConnectionError("Failed to connect to Ollama."), httpx.ConnectError("All connection attempts failed")],
    ids=lambda exc: type(exc).__name__,
)
def test_a_refused_connection_names_the_host_and_the_setting(exc: Exception) -> None:
    error = translate_error(exc, host="http://gpu-box:11434")

    assert "ollama at http://gpu-box:11434: cannot connect" in error.message
    assert "OLLAMA_HOST" in error.message


def test_a_timeout_says_which_setting_to_raise() -> None:
    error = translate_error(httpx.ReadTimeout(""), host="http://gpu-box:11434")

    assert isinstance(error, LLMUnavailableError)
    assert "no answer within the timeout (ReadTimeout)" in error.message
    assert "LLM_TIMEOUT_SECONDS" in error.message


def test_an_answer_that_does_not_parse_is_unavailable() -> None:
    error = translate_error(_validation_error(ChatResponse, {"model": "llama3.1"}))

    assert isinstance(error, LLMUnavailableError)


def test_a_request_the_sdk_refuses_to_send_is_a_bad_request() -> None:
    # The SDK validates what it sends (messages, tools, the request) before any I/O.
    error = translate_error(_validation_error(ollama.Message, {"content": "no role"}))

    assert isinstance(error, LLMBadRequestError)


def test_every_exception_the_sdk_exports_is_translated() -> None:
    exported = [
        member
        for name in ollama.__all__
        if inspect.isclass(member := getattr(ollama, name)) and issubclass(member, BaseException)
    ]

    assert exported, "the ollama SDK exports no exception classes any more: review SDK_ERRORS"
    for exc_type in exported:
        assert issubclass(exc_type, SDK_ERRORS), f"ollama.{exc_type.__name__} escapes the adapter"


def test_every_httpx_error_raised_during_a_call_is_translated() -> None:
    # httpx errors that cannot come out of a call the adapter makes: a malformed URL fails
    # when the client is built, cookie and stream-state errors are misuses of httpx itself.
    not_raised_by_calls = {httpx.InvalidURL, httpx.CookieConflict}
    for name in httpx.__all__:
        member = getattr(httpx, name)
        if not (inspect.isclass(member) and issubclass(member, Exception)):
            continue
        if member in not_raised_by_calls or issubclass(member, httpx.StreamError):
            continue
        assert issubclass(member, SDK_ERRORS), f"httpx.{name} escapes the adapter"


@pytest.mark.parametrize("exc_type", SDK_ERRORS, ids=lambda t: t.__name__)
def test_every_caught_exception_becomes_an_llm_error(exc_type: type[Exception]) -> None:
    samples: dict[type[Exception], Exception] = {
        ollama.ResponseError: ollama.ResponseError("boom", 500),
        ollama.RequestError: ollama.RequestError("boom"),
        httpx.HTTPError: httpx.HTTPError("boom"),
        ConnectionError: ConnectionError("boom"),
        pydantic.ValidationError: _validation_error(ChatResponse, {}),
        json.JSONDecodeError: json.JSONDecodeError("boom", "", 0),
    }

    error = translate_error(samples[exc_type])

    assert isinstance(error, LLMRateLimitError | LLMUnavailableError | LLMAuthError | LLMBadRequestError)
    assert error.message.startswith("ollama: ")
