"""Adapter overhead per call: each LLM adapter (official SDK + our translation) against its
loopback vendor fake, next to a bare HTTP request of the same shape to the same fake (the
fake's own time plus the network), in the same run. Overhead = adapter - bare.

Run: .venv/bin/python bench/providers.py [--calls 300]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentrunner.domain.llm import LLMRequest, Message

VENDORS = ("openai", "anthropic", "bedrock", "ollama")


def bare_request(vendor: str, fake: Any, base: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(url, headers, body) of the smallest request the vendor's fake answers."""
    question = [{"role": "user", "content": "What is the capital of France?"}]
    if vendor == "openai":
        return (
            f"{fake.base_url}/chat/completions",
            {"authorization": f"Bearer {fake.api_key}"},
            {
                "model": fake.model,
                "messages": question,
            },
        )
    if vendor == "anthropic":
        return (
            f"{base}/v1/messages",
            {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"},
            {
                "model": fake.model,
                "max_tokens": 64,
                "messages": question,
            },
        )
    if vendor == "bedrock":
        auth = (
            "AWS4-HMAC-SHA256 Credential=AKIATEST/20260101/us-east-1/bedrock/aws4_request, "
            "SignedHeaders=host, Signature=0"
        )
        return (
            f"{base}/model/{quote(fake.model, safe='')}/converse",
            {"authorization": auth},
            {"messages": [{"role": "user", "content": [{"text": question[0]["content"]}]}]},
        )
    return f"{base}/api/chat", {}, {"model": fake.model, "messages": question, "stream": False}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def measure(vendor: str, calls: int) -> tuple[list[float], list[float]]:
    module = importlib.import_module(f"tests.fakes.{vendor}_server")
    with module.running() as fake:
        provider = fake.provider(timeout=10)
        base = fake_base(fake)
        url, headers, body = bare_request(vendor, fake, base)
        request = LLMRequest(
            model=fake.model, messages=[Message(role="user", content="What is the capital of France?")]
        )
        adapter_ms: list[float] = []
        bare_ms: list[float] = []
        async with httpx.AsyncClient() as client:
            for _ in range(20):  # warm-up: connections, imports, caches
                await provider.complete(request)
                (await client.post(url, json=body, headers=headers)).raise_for_status()
            for _ in range(calls):
                started = time.perf_counter()
                await provider.complete(request)
                adapter_ms.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                (await client.post(url, json=body, headers=headers)).raise_for_status()
                bare_ms.append((time.perf_counter() - started) * 1000)
        await provider.close()
    return adapter_ms, bare_ms


def fake_base(fake: Any) -> str:
    host, port = fake._server.server_address[:2]  # the fakes' loopback address
    return f"http://{host}:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    print(f"LLM adapters vs a bare HTTP request to the same loopback fake, {args.calls} sequential calls each")
    columns = ("adapter p50", "adapter p99", "bare p50", "bare p99", "overhead p50", "overhead p99")
    print(f"{'provider':10} " + " ".join(f"{column:>13}" for column in columns))
    for vendor in VENDORS:
        adapter, bare = asyncio.run(measure(vendor, args.calls))
        a50, a99, b50, b99 = (
            percentile(adapter, 0.5),
            percentile(adapter, 0.99),
            percentile(bare, 0.5),
            percentile(bare, 0.99),
        )
        values = (a50, a99, b50, b99, a50 - b50, a99 - b99)
        print(f"{vendor:10} " + " ".join(f"{value:11.2f}ms" for value in values))


if __name__ == "__main__":
    main()
