"""aio-pika's and aiormq's own lines about a reconnection, kept out of the log below DEBUG.

While the broker is away they log each attempt twice (an ERROR and a WARNING, every
second), and when the connection drops an ERROR per channel whose reopening ran before the
connection was back: hundreds of lines that say one thing, in an outage whose start and end
the bus logs once each (`RabbitMQ connection lost, reconnecting` / `... restored`, with how
long it lasted). With LOG_LEVEL=DEBUG they are all shown again. Anything else those
libraries log passes untouched.
"""

from __future__ import annotations

import logging

# logger name -> the start of its per-attempt messages (the format string, before %-args)
_PER_ATTEMPT = {
    "aiormq.connection": "error when creating transport",
    "aio_pika.robust_connection": "Connection attempt to ",
}
_CALLBACKS = "aio_pika.tools"


class ReconnectNoise(logging.Filter):
    """Drops the per-attempt reconnection lines (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return True
        message = record.msg if isinstance(record.msg, str) else ""
        if record.name == _CALLBACKS:
            return not _channel_reopened_too_early(message, record.args)
        start = _PER_ATTEMPT.get(record.name)
        return start is None or not message.startswith(start)


def _channel_reopened_too_early(message: str, args: object) -> bool:
    # "Callback %r error: %s: %s" for RobustChannel._on_close raising RuntimeError("... closed"):
    # the channel is reopened by the connection once it is back.
    if not message.startswith("Callback ") or not isinstance(args, tuple) or len(args) != 3:
        return False
    callback, kind, _ = args
    return "RobustChannel._on_close" in repr(callback) and kind == "RuntimeError"


_NOISE = ReconnectNoise()


def quiet_reconnect_noise() -> None:
    """Install the filter on the libraries' loggers (again: a no-op)."""
    for name in (*_PER_ATTEMPT, _CALLBACKS):
        logging.getLogger(name).addFilter(_NOISE)  # the same filter is never added twice
