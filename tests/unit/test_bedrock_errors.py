"""The Bedrock adapter maps every error boto3 can raise to one agentrunner error: every error
code of the Bedrock Runtime service model (as an HTTP error and as an exception event inside
a ConverseStream), the AWS auth front door's codes, unknown codes by HTTP status, and
botocore's and urllib3's connection, timeout and credential exceptions. Pure: no network."""

from __future__ import annotations

import inspect
from typing import Any

# botocore ships no types (as in adapters/providers/bedrock.py).
import botocore.exceptions  # type: ignore[import-untyped]
import botocore.session  # type: ignore[import-untyped]
import pytest
import urllib3.exceptions

from agentrunner.adapters.providers.bedrock import translate_error
from agentrunner.domain.errors import (
    LLMAuthError,
    LLMBadRequestError,
    LLMError,
    LLMRateLimitError,
    LLMUnavailableError,
)

# What each error of the service model means to the caller. A code botocore adds in a new
# release fails `test_every_service_error_code_has_a_decided_mapping` until it is decided here.
SERVICE_ERRORS: dict[str, type[LLMError]] = {
    "AccessDeniedException": LLMAuthError,
    "ConflictException": LLMBadRequestError,
    "InternalServerException": LLMUnavailableError,
    "ModelErrorException": LLMUnavailableError,
    "ModelNotReadyException": LLMUnavailableError,
    "ModelStreamErrorException": LLMUnavailableError,
    "ModelTimeoutException": LLMUnavailableError,
    "ResourceNotFoundException": LLMBadRequestError,
    "ServiceQuotaExceededException": LLMRateLimitError,
    "ServiceUnavailableException": LLMUnavailableError,
    "ThrottlingException": LLMRateLimitError,
    "ValidationException": LLMBadRequestError,
}

# Codes of the AWS request front door (signing, tokens), not in the service model.
AUTH_FRONT_DOOR = [
    ("UnrecognizedClientException", 403),
    ("InvalidSignatureException", 403),
    ("SignatureDoesNotMatch", 403),
    ("IncompleteSignatureException", 403),
    ("MissingAuthenticationTokenException", 403),
    ("InvalidClientTokenId", 403),
    ("ExpiredTokenException", 403),
]


def _service_model() -> Any:
    return botocore.session.Session().get_service_model("bedrock-runtime")


def _modeled_errors() -> list[tuple[str, int | None]]:
    return [(shape.name, shape.metadata["error"].get("httpStatusCode")) for shape in _service_model().error_shapes]


def _stream_exception_events() -> list[str]:
    stream = _service_model().operation_model("ConverseStream").output_shape.members["stream"]
    return [name for name, shape in stream.members.items() if shape.metadata.get("exception")]


def _client_error(code: str, status: int | None, headers: dict[str, str] | None = None) -> Exception:
    response: dict[str, Any] = {"Error": {"Code": code, "Message": f"{code} happened"}}
    if status is not None:
        response["ResponseMetadata"] = {
            "HTTPStatusCode": status,
            "RequestId": "req-1",
            "HTTPHeaders": headers or {},
        }
    error: Exception = botocore.exceptions.ClientError(response, "Converse")
    return error


def _bare(cls: type[Exception]) -> Exception:
    """An instance of a botocore exception without its class-specific keyword arguments."""
    exc = cls.__new__(cls)
    Exception.__init__(exc, f"{cls.__name__} happened")
    return exc


def _botocore_exceptions(base: type[Exception]) -> list[type[Exception]]:
    return [
        cls
        for _, cls in inspect.getmembers(botocore.exceptions, inspect.isclass)
        if issubclass(cls, base) and cls is not base
    ]


def test_every_service_error_code_has_a_decided_mapping() -> None:
    modeled = {name for name, _ in _modeled_errors()}

    assert modeled <= set(SERVICE_ERRORS), f"decide the mapping of {sorted(modeled - set(SERVICE_ERRORS))}"


@pytest.mark.parametrize(("code", "status"), _modeled_errors())
def test_each_service_error_becomes_its_agentrunner_error(code: str, status: int | None) -> None:
    error = translate_error(_client_error(code, status))

    assert type(error) is SERVICE_ERRORS[code]
    assert error.context["code"] == code
    assert error.context["request_id"] == "req-1"
    assert code in str(error)


@pytest.mark.parametrize("event", _stream_exception_events())
def test_an_exception_event_inside_a_stream_maps_like_its_http_error(event: str) -> None:
    # botocore raises these as EventStreamError, with the event's lower-camel name as the
    # code and no HTTP status (the stream itself answered 200).
    exc = botocore.exceptions.EventStreamError({"Error": {"Code": event, "Message": "mid-stream"}}, "ConverseStream")

    error = translate_error(exc)

    assert type(error) is SERVICE_ERRORS[event[0].upper() + event[1:]]


def test_every_stream_exception_event_is_a_service_error() -> None:
    assert {event[0].upper() + event[1:] for event in _stream_exception_events()} <= set(SERVICE_ERRORS)


@pytest.mark.parametrize(("code", "status"), AUTH_FRONT_DOOR)
def test_credentials_refused_at_the_front_door_are_auth_errors(code: str, status: int) -> None:
    error = translate_error(_client_error(code, status))

    assert isinstance(error, LLMAuthError)
    assert "AWS_ACCESS_KEY_ID" in str(error)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, LLMRateLimitError),
        (401, LLMAuthError),
        (403, LLMAuthError),
        (400, LLMBadRequestError),
        (404, LLMBadRequestError),
        (413, LLMBadRequestError),
        (408, LLMUnavailableError),
        (500, LLMUnavailableError),
        (502, LLMUnavailableError),
        (504, LLMUnavailableError),
        (None, LLMUnavailableError),
    ],
)
def test_an_unknown_code_falls_back_on_the_http_status(status: int | None, expected: type[LLMError]) -> None:
    assert type(translate_error(_client_error("SomethingNewException", status))) is expected


def test_throttling_carries_the_retry_after_the_vendor_sent() -> None:
    error = translate_error(_client_error("ThrottlingException", 429, {"retry-after": "3"}))

    assert isinstance(error, LLMRateLimitError)
    assert error.context["retry_after"] == pytest.approx(3.0)


def test_throttling_without_retry_after_leaves_it_out() -> None:
    error = translate_error(_client_error("ThrottlingException", 429, {"retry-after": "soon"}))

    assert "retry_after" not in error.context


@pytest.mark.parametrize(
    "exc",
    [
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        botocore.exceptions.ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
        botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        botocore.exceptions.ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
        botocore.exceptions.ProxyConnectionError(proxy_url="http://proxy:3128", error="refused"),
        botocore.exceptions.SSLError(endpoint_url="https://bedrock", error="handshake"),
        botocore.exceptions.ResponseStreamingError(error="connection reset"),
        botocore.exceptions.IncompleteReadError(actual_bytes=1, expected_bytes=2),
        urllib3.exceptions.ReadTimeoutError(None, "/model/m/converse-stream", "Read timed out."),  # type: ignore[arg-type]
        urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead"),
        ConnectionResetError(104, "Connection reset by peer"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_connection_and_timeout_failures_are_unavailable(exc: Exception) -> None:
    error = translate_error(exc)

    assert isinstance(error, LLMUnavailableError)
    assert error.retryable


@pytest.mark.parametrize(
    "base", [botocore.exceptions.HTTPClientError, botocore.exceptions.ConnectionError], ids=lambda c: c.__name__
)
def test_every_botocore_connection_exception_is_unavailable(base: type[Exception]) -> None:
    for cls in [base, *_botocore_exceptions(base)]:
        assert isinstance(translate_error(_bare(cls)), LLMUnavailableError), cls


@pytest.mark.parametrize(
    "exc",
    [
        botocore.exceptions.NoCredentialsError(),
        botocore.exceptions.PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
        botocore.exceptions.CredentialRetrievalError(provider="sts", error_msg="denied"),
        botocore.exceptions.ProfileNotFound(profile="missing"),
        botocore.exceptions.NoAuthTokenError(),
        botocore.exceptions.TokenRetrievalError(provider="sso", error_msg="expired"),
        botocore.exceptions.SSOTokenLoadError(error_msg="no token"),
        botocore.exceptions.UnauthorizedSSOTokenError(),
        botocore.exceptions.MetadataRetrievalError(error_msg="IMDS unreachable"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_missing_or_refused_credentials_are_auth_errors(exc: Exception) -> None:
    error = translate_error(exc)

    assert isinstance(error, LLMAuthError)
    assert not error.retryable


def test_a_request_the_sdk_refuses_to_send_is_a_bad_request() -> None:
    exc = botocore.exceptions.ParamValidationError(report="Invalid type for parameter messages")

    assert isinstance(translate_error(exc), LLMBadRequestError)


def test_every_exception_botocore_exports_becomes_an_llm_error() -> None:
    for cls in _botocore_exceptions(botocore.exceptions.BotoCoreError):
        error = translate_error(_bare(cls))
        assert isinstance(error, LLMError), cls
        assert type(error) is not LLMError, cls
