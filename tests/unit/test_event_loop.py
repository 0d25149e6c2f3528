"""The servers' event loop (EVENT_LOOP): uvloop when installed, the stdlib's on request."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest
import uvloop

from agentrunner.domain.errors import ConfigError
from agentrunner.node import event_loop_factory, run_on_loop


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_a_server_runs_on_uvloop_when_it_is_installed() -> None:
    assert isinstance(run_on_loop("auto", _running_loop), uvloop.Loop)
    assert isinstance(run_on_loop("uvloop", _running_loop), uvloop.Loop)


def test_event_loop_asyncio_keeps_the_stdlib_loop() -> None:
    loop = run_on_loop("asyncio", _running_loop)

    assert not isinstance(loop, uvloop.Loop)
    assert isinstance(loop, asyncio.BaseEventLoop)


def test_without_uvloop_auto_falls_back_and_uvloop_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real_find_spec(name, *a)
    )

    assert event_loop_factory("auto") is None
    with pytest.raises(ConfigError, match="EVENT_LOOP=uvloop"):
        event_loop_factory("uvloop")
