"""Vendor SDK clients and providers made in a worker thread, on first use, never on the loop.

Building an SDK client reads files: openai, anthropic and ollama build an httpx client whose
TLS context loads the CA roots (~25 ms), and look their package's version up in its metadata;
boto3 reads its service model files and the AWS config (100-200 ms). Importing the SDK takes
longer still (0.3 s for boto3 to 2.3 s for anthropic on the CI machine). Done on the loop,
each would stall every request the process serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Generic, TypeVar

from agentrunner.domain.llm import Completion, LLMRequest, StreamItem
from agentrunner.ports import LLMProvider

T = TypeVar("T")


class BuiltOffLoop(Generic[T]):
    """One object made by `build` in a worker thread the first time it is needed; callers
    that ask meanwhile wait for that one build."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._built: T | None = None
        self._building = asyncio.Lock()

    @property
    def built(self) -> T | None:
        """The object, or None while nobody has needed it."""
        return self._built

    async def get(self) -> T:
        if self._built is None:
            async with self._building:
                if self._built is None:
                    self._built = await asyncio.to_thread(self._build)
        return self._built

    def forget(self) -> T | None:
        """The object (None if never built), no longer kept: the next `get` builds anew."""
        built, self._built = self._built, None
        return built


class DeferredProvider:
    """An LLMProvider whose module is imported and which is made on its first call, in a
    worker thread (the catalog's SDK providers: see the module's docstring)."""

    def __init__(self, name: str, make: Callable[[], LLMProvider]) -> None:
        self.name = name
        self._provider = BuiltOffLoop(make)

    async def complete(self, request: LLMRequest) -> Completion:
        provider = await self._provider.get()
        return await provider.complete(request)

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        provider = await self._provider.get()
        # aclosing: a consumer that stops early closes the vendor's stream too.
        async with aclosing(provider.stream(request)) as items:  # type: ignore[type-var]
            async for item in items:
                yield item

    async def close(self) -> None:
        provider = self._provider.forget()
        if provider is not None:
            await provider.close()
