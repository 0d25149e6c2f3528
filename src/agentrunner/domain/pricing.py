"""What provider calls cost: USD per million input and output tokens.

An unknown model has no price: its cost is None, never a misleading 0. An agent may set
its own price (`llm_config.pricing`), which wins over this table.
"""

from __future__ import annotations

from agentrunner.domain.execution import Usage

# (provider, model) -> (USD per 1M input tokens, USD per 1M output tokens). A model of
# "*" prices every model of that provider (local models cost nothing per token).
PRICES: dict[tuple[str, str], tuple[float, float]] = {
    ("openai", "gpt-4o"): (2.50, 10.00),
    ("openai", "gpt-4o-mini"): (0.15, 0.60),
    ("openai", "gpt-4"): (30.00, 60.00),
    ("openai", "gpt-4-turbo"): (10.00, 30.00),
    ("openai", "gpt-3.5-turbo"): (0.50, 1.50),
    ("anthropic", "claude-3-5-sonnet-20241022"): (3.00, 15.00),
    ("anthropic", "claude-3-5-haiku-20241022"): (0.80, 4.00),
    ("anthropic", "claude-3-opus-20240229"): (15.00, 75.00),
    ("anthropic", "claude-3-sonnet-20240229"): (3.00, 15.00),
    ("anthropic", "claude-3-haiku-20240307"): (0.25, 1.25),
    ("bedrock", "anthropic.claude-3-5-sonnet-20241022-v2:0"): (3.00, 15.00),
    ("bedrock", "anthropic.claude-3-sonnet-20240229-v1:0"): (3.00, 15.00),
    ("bedrock", "anthropic.claude-3-haiku-20240307-v1:0"): (0.25, 1.25),
    ("bedrock", "meta.llama3-70b-instruct-v1:0"): (2.65, 3.50),
    ("bedrock", "meta.llama3-8b-instruct-v1:0"): (0.30, 0.60),
    ("bedrock", "amazon.titan-text-express-v1"): (0.20, 0.60),
    ("bedrock", "amazon.titan-text-lite-v1"): (0.15, 0.20),
    ("ollama", "*"): (0.0, 0.0),
    ("echo", "*"): (0.0, 0.0),
    ("scripted", "*"): (0.0, 0.0),
}


def price_of(provider: str, model: str) -> tuple[float, float] | None:
    """USD per million (input, output) tokens of `model` on `provider`, if known."""
    return PRICES.get((provider, model)) or PRICES.get((provider, "*"))


def cost_usd(provider: str, model: str, usage: Usage, *, override: tuple[float, float] | None = None) -> float | None:
    """The cost of `usage`, from `override` or the table; None when the price is unknown."""
    price = override or price_of(provider, model)
    if price is None:
        return None
    per_input, per_output = price
    return round((usage.input_tokens * per_input + usage.output_tokens * per_output) / 1_000_000, 8)
