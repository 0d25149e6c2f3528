"""Slack request signatures, checked with slack_sdk's SignatureVerifier."""

from __future__ import annotations

import time
from collections.abc import Mapping

from slack_sdk.signature import SignatureVerifier

# Slack's replay window: a request signed more than this many seconds away is refused.
MAX_CLOCK_SKEW_SECONDS = 5 * 60


class SlackSignatureVerifier:
    """A `SlackRequestVerifier` for one app's signing secret: HMAC-SHA256 over
    `v0:{timestamp}:{raw body}`, within five minutes of now."""

    def __init__(self, signing_secret: str) -> None:
        if not signing_secret:
            raise ValueError("a Slack signing secret must not be empty")
        self._verifier = SignatureVerifier(signing_secret)

    def problem(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        timestamp = headers.get("x-slack-request-timestamp")
        signature = headers.get("x-slack-signature")
        if not timestamp or not signature:
            return "missing X-Slack-Request-Timestamp or X-Slack-Signature header"
        if not timestamp.isdigit():
            return "X-Slack-Request-Timestamp is not a Unix time"
        # Checked here too (the SDK checks it as well) to say which rule the request broke.
        if abs(time.time() - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
            return "X-Slack-Request-Timestamp is more than 5 minutes away from now (a replay, or a wrong clock)"
        if not self._verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
            return "X-Slack-Signature does not match the body signed with SLACK_SIGNING_SECRET"
        return None
