"""The tracing port: OpenTelemetry spans for the hops of an invocation."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Protocol

from agentrunner.ports.bus import EventBus
from agentrunner.ports.providers import ProviderCatalog


class RequestSpan(Protocol):
    """The span of one HTTP request, open while the request is served."""

    @property
    def caller_trace_id(self) -> str | None:
        """The trace id of the caller's trace this span continues (the request carried a W3C
        `traceparent`), else None: the span's trace is the request's own trace id."""
        ...

    def finish(self, *, route: str | None, status: int) -> None:
        """Name the span after the matched `route` (e.g. `/agents/{name}/invoke`) and record
        the response `status`; the span ends when its context manager exits."""
        ...


class Tracing(Protocol):
    """OpenTelemetry spans for the hops of an invocation: HTTP request, publish, consume,
    provider call (exported over OTLP; absent when tracing is off).

    Contract: spans of one invocation form one trace, across processes (W3C trace context
    travels in the event headers); a root span started while `tracing.traced(trace_id)`
    is active takes that 32-hex trace id, so the trace_id of the logs is the OTel trace id.
    Never raises into the work it observes.
    """

    def request_span(self, method: str, path: str, headers: Mapping[str, str]) -> AbstractContextManager[RequestSpan]:
        """A server span for an HTTP request (continuing the caller's `traceparent` header
        when it carries one); `headers` have lower-case names."""
        ...

    def traced_bus(self, bus: EventBus) -> EventBus:
        """`bus`, with a producer span around each publish (its context injected into the
        event's headers) and a consumer span around each handler (child of that context)."""
        ...

    def traced_catalog(self, catalog: ProviderCatalog) -> ProviderCatalog:
        """`catalog`, whose providers wrap each call to the model in a client span."""
        ...

    async def close(self) -> None:
        """Export the spans still buffered, then stop exporting."""
        ...
