"""LLMProvider contract: every adapter, driven through its vendor's official SDK against a
loopback fake of the vendor's wire protocol (tests/fakes/<vendor>_server.py), answers,
streams, reports usage, normalises tool calls and maps every failure the same way."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agentrunner.domain.agent import LLMConfig, ProviderName
from agentrunner.domain.errors import LLMAuthError, LLMBadRequestError, LLMError, LLMRateLimitError, LLMUnavailableError
from agentrunner.domain.llm import Completion, LLMRequest, Message, TextDelta, ToolCall, ToolDefinition
from agentrunner.domain.pricing import cost_usd
from agentrunner.ports.providers import LLMProvider
from agentrunner.runtime.llm_calls import complete_with_retries
from tests.fakes import ollama_server, openai_server
from tests.fakes.vendor import FakeVendor, Reply

WEATHER = ToolDefinition(
    name="get_weather",
    description="The weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def _request(fake: FakeVendor, **fields: object) -> LLMRequest:
    return LLMRequest.model_validate(
        {
            "model": fake.model,
            "messages": [
                Message(role="system", content="Answer in one sentence."),
                Message(role="user", content="What is the capital of France?"),
            ],
            "temperature": 0.2,
            "max_tokens": 64,
            **fields,
        }
    )


async def test_complete_returns_the_answer_usage_and_a_request_id(fake: FakeVendor, provider: LLMProvider) -> None:
    fake.reply_with("Paris.", input_tokens=21, output_tokens=3)

    completion = await provider.complete(_request(fake))

    assert completion.text == "Paris."
    assert completion.tool_calls == []
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (21, 3)
    assert completion.finish_reason
    assert completion.latency_ms is not None
    assert completion.latency_ms >= 0
    assert provider.name == fake.name


@pytest.mark.parametrize("fake", ["anthropic", "bedrock"], indirect=True)
async def test_input_read_from_or_written_to_the_prompt_cache_counts_as_input(
    fake: FakeVendor, provider: LLMProvider
) -> None:
    """Anthropic and Bedrock report cached input beside `input_tokens`, not in it: left out,
    a run that reuses a long prompt would look (and spend against its budget) nearly free."""
    cached = Reply("Paris.", input_tokens=5, output_tokens=3, cache_read_tokens=900, cache_write_tokens=40)
    fake.reply_in_turn(cached, cached)

    completion = await provider.complete(_request(fake))
    streamed = [item async for item in provider.stream(_request(fake))][-1]

    assert isinstance(streamed, Completion)
    for usage in (completion.usage, streamed.usage):
        assert (usage.input_tokens, usage.output_tokens) == (945, 3)


async def test_the_request_reaches_the_vendor_in_its_own_terms(fake: FakeVendor, provider: LLMProvider) -> None:
    await provider.complete(_request(fake, tools=[WEATHER]))

    [received] = fake.received
    assert received.model == fake.model
    assert received.system == "Answer in one sentence."
    assert received.messages == [{"role": "user", "content": "What is the capital of France?"}]
    assert received.temperature == pytest.approx(0.2)
    assert received.max_tokens == 64
    assert received.tool_names == ["get_weather"]
    assert received.stream is False


async def test_stream_yields_the_text_in_pieces_then_the_whole_completion(
    fake: FakeVendor, provider: LLMProvider
) -> None:
    fake.reply_with("Paris is the capital of France.", input_tokens=9, output_tokens=8)

    items = [item async for item in provider.stream(_request(fake))]

    deltas = [item for item in items if isinstance(item, TextDelta)]
    final = items[-1]
    assert len(deltas) >= 3
    assert isinstance(final, Completion)
    assert "".join(d.text for d in deltas) == final.text == "Paris is the capital of France."
    assert (final.usage.input_tokens, final.usage.output_tokens) == (9, 8)
    assert fake.received[0].stream is True


async def test_a_tool_call_comes_back_in_one_shape(fake: FakeVendor, provider: LLMProvider) -> None:
    fake.reply_with(tool_call=("get_weather", {"city": "Paris"}))

    completion = await provider.complete(_request(fake, tools=[WEATHER]))

    [call] = completion.tool_calls
    assert (call.name, call.arguments) == ("get_weather", {"city": "Paris"})
    assert call.id


async def test_a_streamed_tool_call_is_assembled(fake: FakeVendor, provider: LLMProvider) -> None:
    fake.reply_with(tool_call=("get_weather", {"city": "Paris"}))

    items = [item async for item in provider.stream(_request(fake, tools=[WEATHER]))]

    final = items[-1]
    assert isinstance(final, Completion)
    assert [(c.name, c.arguments) for c in final.tool_calls] == [("get_weather", {"city": "Paris"})]


async def test_a_tool_result_is_sent_back_to_the_vendor(fake: FakeVendor, provider: LLMProvider) -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})
    messages = [
        Message(role="user", content="Weather in Paris?"),
        Message(role="assistant", content="", tool_calls=[call]),
        Message(role="tool", content="18°C and sunny", tool_call_id="call_1"),
    ]

    completion = await provider.complete(LLMRequest(model=fake.model, messages=messages, tools=[WEATHER]))

    assert completion.text
    assert "18°C and sunny" in str(fake.received[0].messages)


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, LLMRateLimitError), (500, LLMUnavailableError), (401, LLMAuthError), (400, LLMBadRequestError)],
)
async def test_vendor_failures_map_to_one_error_tree(
    fake: FakeVendor, provider: LLMProvider, status: int, error: type[LLMError]
) -> None:
    fake.fail_with(status)

    with pytest.raises(error) as caught:
        await provider.complete(_request(fake))

    if status == 429:
        assert caught.value.context.get("retry_after") == pytest.approx(1.0)


async def test_a_stream_that_fails_maps_the_same_way(fake: FakeVendor, provider: LLMProvider) -> None:
    fake.fail_with(429)

    with pytest.raises(LLMRateLimitError):
        async for _ in provider.stream(_request(fake)):
            pass


async def test_an_unreachable_vendor_is_unavailable(fake: FakeVendor) -> None:
    adapter = fake.unreachable_provider()
    try:
        with pytest.raises(LLMUnavailableError):
            await adapter.complete(_request(fake))
    finally:
        await adapter.close()


async def test_a_vendor_slower_than_the_timeout_is_unavailable(fake: FakeVendor) -> None:
    fake.slow(2.0)
    adapter = fake.provider(timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(LLMUnavailableError):
            await adapter.complete(_request(fake))
        assert time.monotonic() - started < 1.9
    finally:
        fake.slow(0)
        await adapter.close()


# -- the platform's retry policy over every adapter -------------------------------------


def _llm(fake: FakeVendor, attempts: int = 3) -> LLMConfig:
    return LLMConfig(provider=ProviderName(fake.name), model=fake.model, max_attempts=attempts)


async def test_transient_failures_are_tried_again_then_priced(fake: FakeVendor, provider: LLMProvider) -> None:
    fake.fail_with(500, 429)
    fake.reply_with("Paris.", input_tokens=1000, output_tokens=500)

    started = time.monotonic()
    completion = await complete_with_retries(provider, _request(fake), _llm(fake), base_delay_seconds=0.01)

    assert time.monotonic() - started >= 0.95, "the vendor's Retry-After (1 s) was honoured"
    assert completion.text == "Paris."
    assert len(fake.received) == 3
    expected = cost_usd(fake.name, fake.model, completion.usage)
    assert expected is not None
    assert completion.cost_usd == pytest.approx(expected)


async def test_retries_stop_after_max_attempts(fake: FakeVendor, provider: LLMProvider) -> None:
    fake.fail_with(500, 500, 500)

    with pytest.raises(LLMUnavailableError):
        await complete_with_retries(provider, _request(fake), _llm(fake, attempts=2), base_delay_seconds=0.01)

    assert len(fake.received) == 2


async def test_auth_and_bad_requests_are_never_tried_again(fake: FakeVendor, provider: LLMProvider) -> None:
    fake.fail_with(401, 400)

    with pytest.raises(LLMAuthError):
        await complete_with_retries(provider, _request(fake), _llm(fake), base_delay_seconds=0.01)
    with pytest.raises(LLMBadRequestError):
        await complete_with_retries(provider, _request(fake), _llm(fake), base_delay_seconds=0.01)

    assert len(fake.received) == 2


async def test_two_agents_on_different_providers_run_concurrently() -> None:
    """Each vendor holds its request until the other vendor has one too: called one after the
    other, the first would wait for a request that never comes (the barrier's deadline breaks
    it, the call fails). A fact recorded at the vendors, not a duration measured here."""
    both_at_the_vendors = threading.Barrier(2, timeout=8)
    with openai_server.running() as openai_fake, ollama_server.running() as ollama_fake:
        openai_fake.script = lambda body: (both_at_the_vendors.wait(), ("from openai", None))[1]
        answer_ollama = ollama_fake.next_answer

        def held_ollama_answer() -> tuple[Reply, int | None, float]:
            both_at_the_vendors.wait()
            return answer_ollama()

        ollama_fake.next_answer = held_ollama_answer  # type: ignore[method-assign]
        ollama_fake.reply_with("from ollama")
        providers: list[LLMProvider] = [openai_fake.provider(), ollama_fake.provider()]
        try:
            answers = await asyncio.gather(
                providers[0].complete(_request(openai_fake)), providers[1].complete(_request(ollama_fake))
            )
        finally:
            for adapter in providers:
                await adapter.close()

    assert [a.text for a in answers] == ["from openai", "from ollama"]
    assert not both_at_the_vendors.broken


async def test_a_failed_tool_result_reaches_the_vendor_marked_as_an_error(
    fake: FakeVendor, provider: LLMProvider
) -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})
    messages = [
        Message(role="user", content="Weather in Paris?"),
        Message(role="assistant", content="", tool_calls=[call]),
        Message(role="tool", content="error: timed out after 30 s", tool_call_id="call_1", is_error=True),
    ]

    await provider.complete(LLMRequest(model=fake.model, messages=messages, tools=[WEATHER]))

    sent = fake.received[0].messages[-1]
    assert (sent["role"], sent["content"]) == ("tool", "error: timed out after 30 s")
    # The vendors whose format can say so are told: Anthropic's is_error, Bedrock's status.
    assert sent.get("is_error", False) is (fake.name in ("anthropic", "bedrock"))
