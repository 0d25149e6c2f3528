"""Cost of a call: from the pricing table, an agent's own price, or unknown (None, not 0)."""

from __future__ import annotations

import pytest

from agentrunner.adapters.providers.offline import EchoProvider
from agentrunner.domain.agent import LLMConfig
from agentrunner.domain.execution import Usage
from agentrunner.domain.llm import LLMRequest, Message
from agentrunner.domain.pricing import cost_usd
from agentrunner.runtime.llm_calls import complete_with_retries

MILLION = Usage(input_tokens=1_000_000, output_tokens=1_000_000)


@pytest.mark.parametrize(
    ("provider", "model", "expected"),
    [
        ("openai", "gpt-4o", 12.5),
        ("anthropic", "claude-3-haiku-20240307", 1.5),
        ("bedrock", "amazon.titan-text-express-v1", 0.8),
        ("ollama", "any-local-model", 0.0),
    ],
)
def test_known_prices_come_from_the_table(provider: str, model: str, expected: float) -> None:
    assert cost_usd(provider, model, MILLION) == pytest.approx(expected)


def test_an_unknown_model_has_no_cost_rather_than_zero() -> None:
    assert cost_usd("openai", "gpt-99-unreleased", MILLION) is None


async def test_an_agent_price_wins_over_the_table() -> None:
    llm = LLMConfig.model_validate(
        {"provider": "echo", "model": "echo", "pricing": {"input_per_million": 2.0, "output_per_million": 4.0}}
    )
    request = LLMRequest(model="echo", messages=[Message(role="user", content="one two three four")])

    completion = await complete_with_retries(EchoProvider(), request, llm)

    assert completion.usage == Usage(input_tokens=4, output_tokens=4)
    assert completion.cost_usd == pytest.approx((4 * 2.0 + 4 * 4.0) / 1_000_000)
