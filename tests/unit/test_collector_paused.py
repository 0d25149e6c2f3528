"""The garbage collector paused during a start (`cli.collector.collector_paused`, the CLI's
imports): always on again after it, a failed start included; never turned on by it where
it was off."""

from __future__ import annotations

import gc
import importlib

import pytest

import agentrunner.cli
from agentrunner.cli.collector import collector_paused


def test_the_collector_is_off_inside_and_on_again_after_even_when_the_start_failed() -> None:
    seen: list[bool] = []

    def failed_start() -> None:
        with collector_paused():
            seen.append(gc.isenabled())
            raise RuntimeError("the start failed")

    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        failed_start()

    assert seen == [False]
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_importing_the_cli_leaves_the_collector_on() -> None:
    importlib.reload(agentrunner.cli)  # what importing it does, again

    assert gc.isenabled()
