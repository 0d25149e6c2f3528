"""OpenTelemetry spans (see `ports.tracing.Tracing`), exported over OTLP/HTTP with a batch
processor; built by the node only when OTEL_EXPORTER_OTLP_ENDPOINT is set.

The hops of an invocation and their spans:
- the HTTP request (server span, `POST /agents/{name}/invoke`), continuing a `traceparent`;
- each publish (producer span `publish <topic>`), whose W3C context is written into the
  event's `headers` (`traceparent`, `tracestate`), so it crosses RabbitMQ with the event;
- each handler run (consumer span `process <topic>`, child of the publish that sent it);
- each call to a model (client span `chat <model>`, with the gen_ai attributes).
Our own 32-hex trace id and OTel's are one: a root span takes the trace id of the work in
progress (`tracing.current_trace_id()`), and an edge that continues a caller's trace takes
that trace's id as its own.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agentrunner.domain.agent import LLMConfig
from agentrunner.domain.event import DeadLetter, Event
from agentrunner.domain.llm import Completion, LLMRequest, StreamItem
from agentrunner.logs import get_logger
from agentrunner.ports.bus import DeadLetterHandler, EventBus, EventHandler, Subscription
from agentrunner.ports.providers import LLMProvider, ProviderCatalog
from agentrunner.ports.tracing import RequestSpan
from agentrunner.tracing import current_trace_id, traced

log = get_logger(__name__)

_HEX_TRACE_ID = re.compile(r"^[0-9a-fA-F]{32}$")
_TRACEPARENT = "traceparent"
_CONTEXT_HEADERS = frozenset({_TRACEPARENT, "tracestate"})
# One event per streamed piece of text: a span each would bury the trace in noise.
_UNTRACED_TOPICS = ("execution.progress.",)
_CLOSE_TIMEOUT_SECONDS = 5.0


class _TraceIdOfTheWork(IdGenerator):
    """Root spans take the trace id of the work in progress when it is 32 hex digits (ours
    always are), so a log line's trace_id finds its trace; random ids otherwise."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        return self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        trace_id = current_trace_id()
        if trace_id and _HEX_TRACE_ID.match(trace_id) and int(trace_id, 16):
            return int(trace_id, 16)
        return self._random.generate_trace_id()


def _hex_trace_id(span: Span) -> str:
    return format(span.get_span_context().trace_id, "032x")


class _RequestSpan:
    def __init__(self, span: Span, method: str, *, continued: bool) -> None:
        self._span = span
        self._method = method
        self._continued = continued

    @property
    def caller_trace_id(self) -> str | None:
        return _hex_trace_id(self._span) if self._continued else None

    def finish(self, *, route: str | None, status: int) -> None:
        if route:
            self._span.update_name(f"{self._method} {route}")
            self._span.set_attribute("http.route", route)
        self._span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self._span.set_status(Status(StatusCode.ERROR))


class OtelTracing:
    """Tracing with the OpenTelemetry SDK: a tracer provider of this node's own (the global
    one is left alone), exporting batches to `endpoint` + `/v1/traces`."""

    def __init__(self, *, endpoint: str, service_name: str, node_id: str, roles: Sequence[str]) -> None:
        resource = Resource.create(
            {
                "service.name": service_name,
                "service.instance.id": node_id,
                "agentrunner.roles": ",".join(sorted(roles)),
            }
        )
        self._provider = TracerProvider(resource=resource, id_generator=_TraceIdOfTheWork())
        self._provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces"))
        )
        self.tracer: Tracer = self._provider.get_tracer("agentrunner")
        self.propagator = TraceContextTextMapPropagator()

    def parent_of(self, headers: Mapping[str, str]) -> Context:
        """The remote context `headers` carry, or an empty one (a new root)."""
        return self.propagator.extract(headers) if _TRACEPARENT in headers else Context()

    @contextmanager
    def request_span(self, method: str, path: str, headers: Mapping[str, str]) -> Iterator[RequestSpan]:
        parent = self.parent_of(headers)
        with self.tracer.start_as_current_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": path,
                "agentrunner.trace_id": current_trace_id() or "",
            },
        ) as span:
            continued = get_current_span(parent).get_span_context().is_valid
            if continued:  # the caller's trace id is the request's trace id from here on
                span.set_attribute("agentrunner.trace_id", _hex_trace_id(span))
            yield _RequestSpan(span, method, continued=continued)

    def traced_bus(self, bus: EventBus) -> EventBus:
        return TracedEventBus(bus, self)

    def traced_catalog(self, catalog: ProviderCatalog) -> ProviderCatalog:
        return TracedCatalog(catalog, self.tracer)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(asyncio.to_thread(self._provider.shutdown), _CLOSE_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning("spans not exported before shutdown: the OTLP endpoint did not answer in time")


class TracedEventBus:
    """An EventBus that traces publishes and handler runs, delegating the rest."""

    def __init__(self, bus: EventBus, tracing: OtelTracing) -> None:
        self._bus = bus
        self._tracing = tracing

    async def publish(self, event: Event) -> None:
        if event.topic.startswith(_UNTRACED_TOPICS):
            await self._bus.publish(event)
            return
        # An event published outside any request (the outbox sweep, a schedule) starts its
        # trace under its own trace id.
        with (
            traced(current_trace_id() or event.trace_id),
            self._tracing.tracer.start_as_current_span(
                f"publish {event.topic}",
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.operation.type": "publish",
                    "messaging.destination.name": event.topic,
                    "messaging.message.id": event.event_id,
                    "agentrunner.trace_id": event.trace_id,
                },
            ),
        ):
            headers = dict(event.headers)
            self._tracing.propagator.inject(headers)
            await self._bus.publish(event.model_copy(update={"headers": headers}))

    async def notify(self, event: Event) -> None:
        await self._bus.notify(event)  # progress: untraced, as its publishes were

    async def subscribe(
        self,
        queue: str,
        patterns: Sequence[str],
        handler: EventHandler,
        *,
        prefetch: int = 1,
        exclusive: bool = False,
    ) -> Subscription:
        tracing = self._tracing

        async def traced_handler(event: Event) -> None:
            if event.topic.startswith(_UNTRACED_TOPICS):
                await handler(event)
                return
            with tracing.tracer.start_as_current_span(
                f"process {event.topic}",
                context=tracing.parent_of(event.headers),
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.operation.type": "process",
                    "messaging.destination.name": event.topic,
                    "messaging.consumer.group.name": queue,
                    "messaging.message.id": event.event_id,
                    "agentrunner.attempt": event.attempt,
                    "agentrunner.trace_id": event.trace_id,
                    "agentrunner.execution_id": str(event.payload.get("execution_id", "")),
                },
            ):
                # The handler sees the event as it was published: the context is the bus's.
                carried = {key: value for key, value in event.headers.items() if key not in _CONTEXT_HEADERS}
                await handler(event.model_copy(update={"headers": carried}))

        return await self._bus.subscribe(queue, patterns, traced_handler, prefetch=prefetch, exclusive=exclusive)

    async def start(self) -> None:
        await self._bus.start()

    async def declare(self, queue: str, patterns: Sequence[str]) -> None:
        await self._bus.declare(queue, patterns)

    async def bind(self, queue: str, patterns: Sequence[str]) -> None:
        await self._bus.bind(queue, patterns)

    async def unbind(self, queue: str, patterns: Sequence[str]) -> None:
        await self._bus.unbind(queue, patterns)

    async def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        return await self._bus.queue_depths(queues)

    async def subscribe_dead_letters(self, handler: DeadLetterHandler) -> Subscription:
        return await self._bus.subscribe_dead_letters(handler)

    async def replay(self, letter: DeadLetter) -> None:
        await self._bus.replay(letter)

    async def ping(self) -> None:
        await self._bus.ping()

    async def close(self, grace_seconds: float = 10.0) -> None:
        await self._bus.close(grace_seconds)


class TracedProvider:
    """An LLMProvider whose calls are client spans with the gen_ai attributes."""

    def __init__(self, provider: LLMProvider, tracer: Tracer) -> None:
        self.name = provider.name
        self._provider = provider
        self._tracer = tracer

    def _attributes(self, request: LLMRequest) -> dict[str, Any]:
        return {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": self.name,
            "gen_ai.request.model": request.model,
        }

    async def complete(self, request: LLMRequest) -> Completion:
        with self._tracer.start_as_current_span(
            f"chat {request.model}", kind=SpanKind.CLIENT, attributes=self._attributes(request)
        ) as span:
            completion = await self._provider.complete(request)
            _record_usage(span, completion)
            return completion

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        # Not made current: a generator's context may be left from another task.
        span = self._tracer.start_span(
            f"chat {request.model}",
            kind=SpanKind.CLIENT,
            attributes={**self._attributes(request), "gen_ai.request.stream": True},
        )
        try:
            async for item in self._provider.stream(request):
                if isinstance(item, Completion):
                    _record_usage(span, item)
                yield item
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            span.end()

    async def close(self) -> None:
        await self._provider.close()


def _record_usage(span: Span, completion: Completion) -> None:
    span.set_attribute("gen_ai.usage.input_tokens", completion.usage.input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", completion.usage.output_tokens)


class TracedCatalog:
    """A ProviderCatalog whose providers are traced (one wrapper per provider client)."""

    def __init__(self, catalog: ProviderCatalog, tracer: Tracer) -> None:
        self._catalog = catalog
        self._tracer = tracer
        self._wrapped: dict[int, tuple[LLMProvider, TracedProvider]] = {}

    def unavailable_reason(self, llm: LLMConfig) -> str | None:
        return self._catalog.unavailable_reason(llm)

    async def provider_for(self, llm: LLMConfig) -> LLMProvider:
        provider = await self._catalog.provider_for(llm)
        entry = self._wrapped.get(id(provider))
        if entry is None or entry[0] is not provider:
            entry = self._wrapped[id(provider)] = (provider, TracedProvider(provider, self._tracer))
        return entry[1]

    async def close(self) -> None:
        self._wrapped.clear()
        await self._catalog.close()
