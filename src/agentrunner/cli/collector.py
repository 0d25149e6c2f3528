"""The garbage collector paused while a process starts (see `collector_paused`). A module
of its own that imports nothing else, so the CLI can pause it before importing anything."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a process starts: its imports, and for a
    server its node and agents (`node.serving.freeze_heap` collects once at the end and
    turns it back on). During a start the heap only grows, and the collections it set off
    walked it again and again: a quarter of a server's start-up CPU (550 ms of 2.2 s with 10
    agents, 850 ms with 1,000). On again on the way out, whatever happened, if it was on."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def imports_frozen() -> None:
    """Everything imported so far (modules, their classes and functions: there for the
    process's life) out of the collector's reach, without a collection first: a server
    calls it once its imports are done, so that the one collection of its start
    (`node.serving.freeze_heap`) walks only what the node's start made. Walking the
    imports too was 100-160 ms of each role's start (a worker's 1.3 s) to find ~3,000
    objects of garbage (the import machinery's: tuples, functions, types), which stay."""
    gc.freeze()
