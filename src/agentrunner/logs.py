"""JSON logs: one object per line on stdout with timestamp, level, service, trace_id,
message and metadata, for our own records and for those of libraries (uvicorn, ...)."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

from agentrunner.domain.redaction import mask_prose
from agentrunner.tracing import current_service, current_trace_id

# Libraries kept at WARNING even when LOG_LEVEL=DEBUG: httpx writes a line per vendor HTTP
# call (noise next to our execution records); botocore/boto3 write each signed request at
# DEBUG, with the AWS access key id and session token in its headers (secrets never logged);
# the MCP SDK's server writes four INFO lines per request of /mcp (our request line says it).
_QUIET_LIBRARIES = ("httpx", "botocore", "boto3", "urllib3", "mcp.server")
_DROPPED = {"_record", "_from_structlog", "logger", "exc_info", "stack_info", "color_message"}


def _shape(default_service: str) -> structlog.types.Processor:
    def shape(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        message = event_dict.pop("event", "")
        record = {
            "timestamp": event_dict.pop("timestamp", None),
            "level": str(event_dict.pop("level", "info")).upper(),
            "service": event_dict.pop("service", None) or current_service() or default_service,
            "trace_id": event_dict.pop("trace_id", None) or current_trace_id(),
            "message": str(message),
        }
        exception = event_dict.pop("exception", None)
        metadata = {key: value for key, value in event_dict.items() if key not in _DROPPED}
        if exception:
            metadata["exception"] = exception
        record["metadata"] = metadata
        return record

    return shape


def _mask_foreign(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A library's message with the credentials of URLs and token-shaped values masked (the
    MCP client logs each endpoint it connects to, userinfo and query included)."""
    event_dict["event"] = mask_prose(str(event_dict.get("event", "")))
    return event_dict


def _render(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> str:
    return orjson.dumps(event_dict, default=str).decode()


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every log record, ours and libraries', to stdout as one JSON object per line."""
    stamp: list[structlog.types.Processor] = [
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *stamp, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *stamp, _mask_foreign],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _shape(service),
                _render,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger whose records carry the current trace id and service."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
