"""Webhooks out: when an execution with a `webhook_url` ends, its record is POSTed there,
signed, and retried with backoff until it is taken (2xx) or the retry window closes."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from pydantic import BaseModel, Field

SIGNATURE_HEADER = "X-AgentRunner-Signature"
MAX_BACKOFF_SECONDS = 3600.0
WEBHOOK_URL_PATTERN = r"^https?://[^\s]+$"


class WebhookAttempt(BaseModel):
    """One POST of an execution's record to its webhook."""

    at: datetime
    status_code: int | None = Field(default=None, description="The receiver's HTTP status; none if it never answered.")
    error: str | None = Field(default=None, description="Why the attempt failed; none when it was taken.")
    duration_ms: float


class WebhookDelivery(BaseModel):
    """Where an execution's record goes when it ends, and every attempt so far."""

    execution_id: str
    url: str
    attempts: list[WebhookAttempt] = Field(default_factory=list)
    created_at: datetime
    next_attempt_at: datetime | None = Field(default=None, description="When it is tried again; none once settled.")
    delivered_at: datetime | None = None
    gave_up_at: datetime | None = None


def backoff_seconds(attempts: int, base_seconds: float) -> float:
    """Wait before the attempt after `attempts` failed ones: doubling from `base_seconds`,
    at most an hour."""
    return min(MAX_BACKOFF_SECONDS, base_seconds * 2.0 ** max(0, attempts - 1))


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """`X-AgentRunner-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
    A receiver recomputes v1 with the shared secret and refuses old timestamps (replays)."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: bytes, header: str, body: bytes, *, now: int, tolerance_seconds: int = 300) -> bool:
    """True when `header` signs `body` with `secret` within `tolerance_seconds` of `now`
    (what a receiver does; used by our tests and offered to Python receivers)."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), f"t={timestamp},v1={parts.get('v1', '')}")
