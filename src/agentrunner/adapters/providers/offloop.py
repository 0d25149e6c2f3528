"""Vendor SDK clients made in a worker thread, on first use, never on the event loop.

Building an SDK client reads files: openai, anthropic and ollama build an httpx client whose
TLS context loads the CA roots (~25 ms), and look their package's version up in its metadata;
boto3 reads its service model files and the AWS config (100-200 ms). Done on the loop, each
would stall every request the process serves. (Importing the SDK takes longer still: the
catalog makes the providers in a worker thread, see catalog.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class BuiltOffLoop(Generic[T]):
    """One object made by `build` in a worker thread the first time it is needed; callers
    that ask meanwhile wait for that one build."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._built: T | None = None
        self._building = asyncio.Lock()

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
