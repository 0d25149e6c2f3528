"""LLMProvider for Amazon Bedrock via `boto3`'s Converse and ConverseStream APIs, which
serve Claude, Llama, Titan and the other Bedrock models in one request shape.

boto3 is blocking: every call runs in a worker thread (`asyncio.to_thread`), and a
stream's events are read one at a time in a worker thread, so the event loop never waits
on a socket.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

# boto3/botocore ship no type information (and we add no stub packages): their names are
# `Any` here, and the client is typed `Any` below.
import boto3  # type: ignore[import-untyped]
import urllib3.exceptions
from botocore import exceptions as boto  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from agentrunner.adapters.providers.offloop import BuiltOffLoop
from agentrunner.domain.errors import (
    LLMAuthError,
    LLMBadRequestError,
    LLMError,
    LLMRateLimitError,
    LLMUnavailableError,
)
from agentrunner.domain.execution import Usage
from agentrunner.domain.llm import (
    ANSWER_TOOL_DESCRIPTION,
    ANSWER_TOOL_NAME,
    Completion,
    LLMRequest,
    Message,
    StreamItem,
    TextDelta,
    ToolCall,
    answer_from_tool,
    answer_tool_schema,
)

_AUTH_HINT = (
    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), and that the model "
    "is enabled for the account in this region"
)

# Bedrock error codes, lower-cased without the "Exception" suffix: an HTTP error says
# "ThrottlingException", the same error inside a ConverseStream says "throttlingException",
# and the AWS auth front door says "SignatureDoesNotMatch" or "ExpiredTokenException".
_BY_CODE: dict[str, type[LLMError]] = {
    "throttling": LLMRateLimitError,
    "toomanyrequests": LLMRateLimitError,
    # "Your request exceeds the service quota for your account ... resubmit your request later."
    "servicequotaexceeded": LLMRateLimitError,
    "internalserver": LLMUnavailableError,
    "internalfailure": LLMUnavailableError,
    "serviceunavailable": LLMUnavailableError,
    "modelnotready": LLMUnavailableError,
    "modeltimeout": LLMUnavailableError,
    "modelerror": LLMUnavailableError,
    "modelstreamerror": LLMUnavailableError,
    "accessdenied": LLMAuthError,
    "unrecognizedclient": LLMAuthError,
    "invalidsignature": LLMAuthError,
    "signaturedoesnotmatch": LLMAuthError,
    "incompletesignature": LLMAuthError,
    "missingauthenticationtoken": LLMAuthError,
    "invalidclienttokenid": LLMAuthError,
    "expiredtoken": LLMAuthError,
    "validation": LLMBadRequestError,
    "resourcenotfound": LLMBadRequestError,
    "conflict": LLMBadRequestError,
}

# botocore's own exceptions (raised before or instead of an HTTP answer), most specific first.
_BY_SDK_EXCEPTION: tuple[tuple[tuple[type[Exception], ...], type[LLMError]], ...] = (
    # Connection refused, DNS, TLS, proxy, connect/read timeouts, a cut stream.
    ((boto.HTTPClientError, boto.ConnectionError, boto.IncompleteReadError), LLMUnavailableError),
    (
        (
            boto.NoCredentialsError,
            boto.PartialCredentialsError,
            boto.CredentialRetrievalError,
            boto.UnknownCredentialError,
            boto.RefreshWithMFAUnsupportedError,
            boto.MetadataRetrievalError,
            boto.NoAuthTokenError,
            boto.TokenRetrievalError,
            boto.UnknownTokenProviderError,
            boto.SSOError,
            boto.LoginError,
            boto.ProfileNotFound,
        ),
        LLMAuthError,
    ),
    # The SDK refused the request before sending it (a parameter of the wrong shape).
    ((boto.ParamValidationError, boto.ValidationError, boto.MissingParametersError), LLMBadRequestError),
)

# What a call can raise: service errors, SDK errors, and urllib3/socket errors that escape
# botocore while a stream body is being read.
_SDK_ERRORS: tuple[type[Exception], ...] = (
    boto.ClientError,
    boto.BotoCoreError,
    urllib3.exceptions.HTTPError,
    OSError,
)


def translate_error(exc: Exception) -> LLMError:
    """The agentrunner error for a boto3/botocore exception (the one place they are mapped):
    by the Bedrock error code, else by the HTTP status, else by the botocore exception class."""
    if isinstance(exc, boto.ClientError):
        return _translate_client_error(exc)
    detail = f"bedrock: {exc}"
    for kinds, error in _BY_SDK_EXCEPTION:
        if isinstance(exc, kinds):
            return LLMAuthError(f"{detail} ({_AUTH_HINT})") if error is LLMAuthError else error(detail)
    return LLMUnavailableError(detail)


def _translate_client_error(exc: Any) -> LLMError:
    response: dict[str, Any] = exc.response or {}
    code = str(response.get("Error", {}).get("Code") or "")
    message = str(response.get("Error", {}).get("Message") or exc)
    metadata: dict[str, Any] = response.get("ResponseMetadata", {})
    status = metadata.get("HTTPStatusCode")
    context: dict[str, Any] = {"code": code, "status": status, "request_id": metadata.get("RequestId")}
    error = _BY_CODE.get(code.lower().removesuffix("exception")) or _by_status(status)
    detail = f"bedrock: {code or status}: {message}"
    if error is LLMRateLimitError:
        retry_after = _retry_after(metadata.get("HTTPHeaders", {}))
        if retry_after is not None:
            context["retry_after"] = retry_after
    elif error is LLMAuthError:
        detail = f"{detail} ({_AUTH_HINT})"
    return error(detail, **context)


def _by_status(status: int | None) -> type[LLMError]:
    if status == 429:
        return LLMRateLimitError
    if status in (401, 403):
        return LLMAuthError
    if status is None or status == 408 or status >= 500:
        return LLMUnavailableError
    if status >= 400:
        return LLMBadRequestError
    return LLMUnavailableError


def _retry_after(headers: dict[str, str]) -> float | None:
    try:
        return float(headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _blocks(message: Message) -> tuple[str, list[dict[str, Any]]]:
    """The Converse role and content blocks of one non-system message."""
    if message.role == "tool":
        if message.tool_call_id is None:
            raise LLMBadRequestError(
                "bedrock: a `tool` message needs the `tool_call_id` of the call it answers", role="tool"
            )
        result: dict[str, Any] = {"toolUseId": message.tool_call_id, "content": [{"text": message.content}]}
        if message.is_error:
            result["status"] = "error"
        return "user", [{"toolResult": result}]
    blocks: list[dict[str, Any]] = []
    # Bedrock rejects a blank text block, which an assistant turn of tool calls alone has.
    if message.content or not message.tool_calls:
        blocks.append({"text": message.content})
    for call in message.tool_calls:
        blocks.append({"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.arguments}})
    return message.role, blocks


def _converse_arguments(request: LLMRequest) -> dict[str, Any]:
    """The keyword arguments of `converse`/`converse_stream` for `request`."""
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            system.append({"text": message.content})
            continue
        role, blocks = _blocks(message)
        # Converse wants user and assistant turns to alternate: tool results (user) that
        # follow each other, or a user message after them, share one turn.
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    arguments: dict[str, Any] = {"modelId": request.model, "messages": messages}
    if system:
        arguments["system"] = system
    inference = request.sampling(temperature="temperature", max_tokens="maxTokens", stop="stopSequences")
    if inference:
        arguments["inferenceConfig"] = inference
    tools = [
        {"toolSpec": {"name": t.name, "description": t.description, "inputSchema": {"json": t.parameters}}}
        for t in request.tools
    ]
    if request.response_schema is not None:
        # Structured output through a forced tool (every Converse model with tool use has
        # it): the answer is its input. With tools of the agent's own, any tool must be
        # called (one of them, or the answer).
        answer: dict[str, Any] = {
            "name": ANSWER_TOOL_NAME,
            "description": ANSWER_TOOL_DESCRIPTION,
            "inputSchema": {"json": answer_tool_schema(request.response_schema)},
        }
        tools.append({"toolSpec": answer})
        choice: dict[str, Any] = {"any": {}} if request.tools else {"tool": {"name": ANSWER_TOOL_NAME}}
        arguments["toolConfig"] = {"tools": tools, "toolChoice": choice}
    elif tools:
        arguments["toolConfig"] = {"tools": tools}
    return arguments


def _answered(completion: Completion, schema: dict[str, Any] | None) -> Completion:
    """`completion` with the forced answer tool's call, when it made one, as its text."""
    answer = next((call for call in completion.tool_calls if call.name == ANSWER_TOOL_NAME), None)
    if schema is None or answer is None:
        return completion
    # Prose around the answer and calls asked with it are dropped: the run ends with it.
    return completion.model_copy(update={"text": answer_from_tool(answer.arguments, schema), "tool_calls": []})


def _usage(raw: dict[str, Any] | None) -> Usage:
    """Input read from or written to the prompt cache is reported beside `inputTokens`: it
    is input all the same, counted (and priced) as input, so a budget is never short of it."""
    raw = raw or {}
    cached = int(raw.get("cacheReadInputTokens") or 0) + int(raw.get("cacheWriteInputTokens") or 0)
    return Usage(input_tokens=int(raw.get("inputTokens", 0)) + cached, output_tokens=int(raw.get("outputTokens", 0)))


def _arguments(raw: object) -> dict[str, Any]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw or "{}")
        except ValueError:
            return {"_raw": raw}
    return raw if isinstance(raw, dict) else {"_value": raw}


class _StreamState:
    """What a ConverseStream has said so far, assembled into the final Completion."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.finish_reason: str | None = None
        self.usage = Usage()

    def take(self, event: dict[str, Any]) -> str | None:
        """Record one event; return its text, if it carries any."""
        if "contentBlockStart" in event:
            start = event["contentBlockStart"]
            tool = start.get("start", {}).get("toolUse")
            if tool:
                self.calls[start["contentBlockIndex"]] = {"id": tool["toolUseId"], "name": tool["name"], "input": ""}
        elif "contentBlockDelta" in event:
            block = event["contentBlockDelta"]
            delta = block.get("delta", {})
            if "toolUse" in delta:
                slot = self.calls.setdefault(block["contentBlockIndex"], {"id": "", "name": "", "input": ""})
                slot["input"] += delta["toolUse"].get("input", "")
            elif delta.get("text"):
                self.text.append(delta["text"])
                return str(delta["text"])
        elif "messageStop" in event:
            self.finish_reason = event["messageStop"].get("stopReason")
        elif "metadata" in event:
            self.usage = _usage(event["metadata"].get("usage"))
        return None

    def completion(self, *, latency_ms: float, request_id: str | None) -> Completion:
        return Completion(
            text="".join(self.text),
            tool_calls=[
                ToolCall(id=slot["id"], name=slot["name"], arguments=_arguments(slot["input"]))
                for _, slot in sorted(self.calls.items())
            ],
            finish_reason=self.finish_reason,
            usage=self.usage,
            latency_ms=latency_ms,
            request_id=request_id,
        )


class BedrockProvider:
    """Bedrock Converse through one blocking `bedrock-runtime` client, called from worker
    threads; one attempt per call (SDK retries off: retries are the caller's policy)."""

    name = "bedrock"

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        config = Config(
            connect_timeout=min(timeout, 10.0),
            read_timeout=timeout,
            # total_max_attempts counts the first call (botocore's max_attempts counts retries).
            retries={"total_max_attempts": 1, "mode": "standard"},
            user_agent_extra="agentrunner",
            # Keys given here sign with SigV4 even when AWS_BEARER_TOKEN_BEDROCK is set (botocore
            # prefers that token unless the signature version is chosen in code).
            signature_version="v4" if access_key_id else None,
        )

        def make_client() -> Any:
            # A session of our own (not boto3's module-level default): explicit keys and region
            # win over the environment and ~/.aws; None falls back to the standard AWS chain.
            session = boto3.session.Session(
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                aws_session_token=session_token,
                region_name=region,
            )
            return session.client("bedrock-runtime", endpoint_url=endpoint_url, config=config)

        # Made on first use, in a worker thread: the session reads the AWS config files and
        # boto3 spends 100-200 ms loading its service model files, which must not block the
        # event loop (nor start-up). Any: boto3 clients are generated at run time, untyped.
        self._made: BuiltOffLoop[Any] = BuiltOffLoop(make_client)

    async def _converse(self, operation: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The answer of the client's `operation` (`converse`, `converse_stream`), called in a
        worker thread (boto3 blocks); the SDK's errors, making the client's included, translated."""
        try:
            client = await self._made.get()
            response: dict[str, Any] = await asyncio.to_thread(getattr(client, operation), **arguments)
        except _SDK_ERRORS as exc:
            raise translate_error(exc) from exc
        return response

    async def complete(self, request: LLMRequest) -> Completion:
        arguments = _converse_arguments(request)
        started = time.perf_counter()
        response = await self._converse("converse", arguments)
        content = response.get("output", {}).get("message", {}).get("content", [])
        completion = Completion(
            text="".join(block["text"] for block in content if "text" in block),
            tool_calls=[
                ToolCall(id=use["toolUseId"], name=use["name"], arguments=_arguments(use.get("input")))
                for use in (block["toolUse"] for block in content if "toolUse" in block)
            ],
            finish_reason=response.get("stopReason"),
            usage=_usage(response.get("usage")),
            latency_ms=(time.perf_counter() - started) * 1000,
            request_id=response.get("ResponseMetadata", {}).get("RequestId"),
        )
        return _answered(completion, request.response_schema)

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        arguments = _converse_arguments(request)
        started = time.perf_counter()
        response = await self._converse("converse_stream", arguments)
        event_stream = response["stream"]
        events: Iterator[dict[str, Any]] = iter(event_stream)
        state = _StreamState()
        try:
            while True:
                # One blocking read per event, off the loop; the client's read timeout bounds it.
                # Errors the service sends inside the stream (throttlingException, ...) are
                # raised here by botocore as EventStreamError.
                event = await asyncio.to_thread(next, events, None)
                if event is None:
                    break
                text = state.take(event)
                if text:
                    yield TextDelta(text=text)
        except _SDK_ERRORS as exc:
            raise translate_error(exc) from exc
        finally:
            event_stream.close()
        completion = state.completion(
            latency_ms=(time.perf_counter() - started) * 1000,
            request_id=response.get("ResponseMetadata", {}).get("RequestId"),
        )
        yield _answered(completion, request.response_schema)

    async def close(self) -> None:
        client = self._made.forget()
        if client is not None:
            await asyncio.to_thread(client.close)
