"""aio-pika's per-attempt reconnection lines are dropped below DEBUG; nothing else is."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from agentrunner.adapters.bus.reconnect_noise import ReconnectNoise


def _record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


class _RobustChannel:
    def _on_close(self) -> None:
        """Stands in for aio_pika's RobustChannel._on_close: its repr is what is matched."""


NOISE = [
    _record("aiormq.connection", logging.ERROR, "error when creating transport: %r", OSError(111, "refused")),
    _record("aio_pika.robust_connection", logging.WARNING, 'Connection attempt to "%s" failed: %s.', "amqp://x", "x"),
    _record(
        "aio_pika.tools",
        logging.ERROR,
        "Callback %r error: %s: %s",
        _RobustChannel()._on_close,
        "RuntimeError",
        "closed",
    ),
]
SIGNAL = [
    _record("aiormq.connection", logging.WARNING, "Cancelling cause reader exited abnormally"),
    _record("aio_pika.tools", logging.ERROR, "Callback %r error: %s: %s", print, "ValueError", "bad"),
    _record("aio_pika.robust_connection", logging.ERROR, "Reconnect attempt failed %s due to %s", "x", "KeyError"),
]


@pytest.fixture
def level() -> Iterator[logging.Logger]:
    logger = logging.getLogger("aio_pika")
    before = (logger.level, logging.getLogger("aiormq").level)
    yield logger
    logger.setLevel(before[0])
    logging.getLogger("aiormq").setLevel(before[1])


@pytest.mark.parametrize("record", NOISE, ids=lambda record: record.name)
def test_a_per_attempt_reconnection_line_is_dropped_unless_debug(
    record: logging.LogRecord, level: logging.Logger
) -> None:
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.INFO)
    assert ReconnectNoise().filter(record) is False
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    assert ReconnectNoise().filter(record) is True


@pytest.mark.parametrize("record", SIGNAL, ids=lambda record: record.getMessage()[:30])
def test_other_lines_of_the_libraries_pass(record: logging.LogRecord, level: logging.Logger) -> None:
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.INFO)
    assert ReconnectNoise().filter(record) is True
