"""Bounded input at the edge: task sizes, list previews, event streams per tenant.

Every caller is hostile until proven otherwise: what a caller sends is measured before it
is recorded, what a list shows of each record is cut to a preview (the whole record is one
`GET` away), and a tenant holds only so many event streams open, each for a bounded time.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agentrunner.domain.errors import PayloadTooLargeError, TooManyStreamsError
from agentrunner.domain.execution import Execution
from agentrunner.domain.tool_gates import PendingToolCall
from agentrunner.tracing import current_tenant

KIB = 1024


@dataclass(frozen=True, slots=True)
class InputLimits:
    """The sizes an API accepts and shows (settings MAX_TASK_BYTES, MAX_STREAMS_PER_TENANT,
    MAX_STREAM_SECONDS; the preview size is fixed)."""

    max_task_bytes: int = 256 * KIB
    preview_bytes: int = 2 * KIB
    max_streams_per_tenant: int = 20
    max_stream_seconds: float = 3600.0


def json_size(value: Any) -> int:
    """Bytes of `value` as compact UTF-8 JSON: how it is stored and sent on."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())


def check_task_size(value: Any, limit: int, what: str = "task_data") -> None:
    """Raise `PayloadTooLargeError` (413) when `value` is over `limit` bytes as JSON."""
    size = json_size(value)
    if size > limit:
        raise PayloadTooLargeError(
            f"{what} is {size} bytes as JSON, over the limit of {limit} bytes (MAX_TASK_BYTES): "
            "send a reference to large content instead of the content"
        )


def cut_text(text: str | None, limit: int) -> tuple[str | None, bool]:
    """`text` cut to its first `limit` UTF-8 bytes (never inside a character), and whether it was cut."""
    if text is None or len(text) * 4 <= limit:  # fits whatever its characters are: not encoded
        return text, False
    encoded = text.encode()
    if len(encoded) <= limit:
        return text, False
    return _first_bytes(encoded, limit), True


def _first_bytes(encoded: bytes, limit: int) -> str:
    return encoded[:limit].decode(errors="ignore")  # a character cut in two is dropped


def cut_mapping(value: dict[str, Any], limit: int) -> tuple[dict[str, Any], bool]:
    """`value` within `limit` bytes of JSON, keeping its shape: its fields in order
    while they fit, a long string cut, any other value that does not fit replaced by the
    start of its JSON text; and whether anything was cut."""
    if json_size(value) <= limit:
        return value, False
    kept: dict[str, Any] = {}
    budget = limit - 2  # the braces
    for key, item in value.items():
        room = budget - json_size(key) - 2  # its colon, and a comma
        if room < 2:  # not even an empty string
            break
        if not isinstance(item, str) and json_size(item) <= room:
            kept[key] = item
        else:
            text = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False, default=str)
            kept[key] = _cut_json_string(text, room)
        budget -= json_size(key) + json_size(kept[key]) + 2
    return kept, True


def _cut_json_string(text: str, limit: int) -> str:
    """`text` cut until it is at most `limit` bytes as a JSON string (escapes counted)."""
    piece = _first_bytes(text.encode(), max(limit - 2, 0))  # its quotes
    while piece and (over := json_size(piece) - limit) > 0:  # each pass drops at least the excess
        encoded = piece.encode()
        piece = _first_bytes(encoded, max(len(encoded) - over, 0))
    return piece


def execution_preview(execution: Execution, limit: int) -> tuple[Execution, bool]:
    """`execution` as a list shows it: its input, output, tool calls and the tool call it
    waits on cut to about `limit` bytes each; and whether anything was cut (the whole is at
    GET /executions/{id})."""
    task, task_cut = cut_mapping(execution.input, limit)
    output, output_cut = cut_text(execution.output, limit)
    calls, calls_cut = [], False
    for call in execution.tool_calls:
        arguments, arguments_cut = cut_mapping(call.arguments, limit)
        result, result_cut = cut_text(call.result, limit)
        calls_cut = calls_cut or arguments_cut or result_cut
        calls.append(
            call.model_copy(update={"arguments": arguments, "result": result}) if arguments_cut or result_cut else call
        )
    pending, pending_cut = pending_call_preview(execution.pending_tool_call, limit)
    if not (task_cut or output_cut or calls_cut or pending_cut):
        return execution, False
    update = {"input": task, "output": output, "tool_calls": calls, "pending_tool_call": pending}
    return execution.model_copy(update=update), True


def pending_call_preview(pending: PendingToolCall | None, limit: int) -> tuple[PendingToolCall | None, bool]:
    """The tool call an execution waits on as a preview shows it: its arguments, and the
    result a human answered with (up to 100,000 characters), cut to about `limit` bytes
    each; and whether anything was cut."""
    if pending is None:
        return None, False
    arguments, arguments_cut = cut_mapping(pending.arguments, limit)
    answer, result_cut = pending.answer, False
    if answer is not None:
        result, result_cut = cut_text(answer.result, limit)
        reason, reason_cut = cut_text(answer.reason, limit)
        result_cut = result_cut or reason_cut
        if result_cut:
            answer = answer.model_copy(update={"result": result, "reason": reason})
    if not (arguments_cut or result_cut):
        return pending, False
    return pending.model_copy(update={"arguments": arguments, "answer": answer}), True


class StreamSlots:
    """How many event streams each tenant has open (in this process), capped.

    The tenant is the caller's (`current_tenant()`, None when auth is off: then every
    caller shares one cap). Each process counts its own streams, like the request rate."""

    def __init__(self, per_tenant: int) -> None:
        self._per_tenant = per_tenant
        self._open: dict[str | None, int] = {}

    def open_count(self, tenant: str | None) -> int:
        """Streams `tenant` has open now."""
        return self._open.get(tenant, 0)

    def take(self) -> str | None:
        """Take a slot for the caller's tenant and return that tenant; raise
        `TooManyStreamsError` (429) when it has none left."""
        tenant = current_tenant()
        count = self._open.get(tenant, 0)
        if count >= self._per_tenant:
            raise TooManyStreamsError(
                f"{count} event streams already open for this tenant, the limit (MAX_STREAMS_PER_TENANT): "
                "close one, or poll GET /executions/{id}"
            )
        self._open[tenant] = count + 1
        return tenant

    def give_back(self, tenant: str | None) -> None:
        """Release one slot of `tenant` (once per `take`)."""
        count = self._open.get(tenant, 0) - 1
        if count > 0:
            self._open[tenant] = count
        else:
            self._open.pop(tenant, None)

    @contextlib.contextmanager
    def held(self, tenant: str | None) -> Iterator[None]:
        """Give the slot back when the block ends, however it ends."""
        try:
            yield
        finally:
            self.give_back(tenant)
