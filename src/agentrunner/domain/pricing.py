"""What provider calls cost: USD per million input and output tokens.

An unknown model has no price: its cost is None, never a misleading 0.
"""

from __future__ import annotations

from agentrunner.domain.execution import Usage

# (provider, model) -> (USD per 1M input tokens, USD per 1M output tokens)
PRICES: dict[tuple[str, str], tuple[float, float]] = {
    ("openai", "gpt-4o"): (2.50, 10.00),
    ("openai", "gpt-4o-mini"): (0.15, 0.60),
    ("openai", "gpt-4"): (30.00, 60.00),
    ("openai", "gpt-4-turbo"): (10.00, 30.00),
    ("openai", "gpt-3.5-turbo"): (0.50, 1.50),
    ("echo", "echo"): (0.0, 0.0),
}


def cost_usd(provider: str, model: str, usage: Usage) -> float | None:
    """The cost of `usage` on `provider`/`model`, or None when the price is unknown."""
    price = PRICES.get((provider, model))
    if price is None:
        return None
    per_input, per_output = price
    return round((usage.input_tokens * per_input + usage.output_tokens * per_output) / 1_000_000, 8)
