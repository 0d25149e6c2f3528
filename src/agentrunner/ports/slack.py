"""The Slack ports: verifying Slack's requests and answering in Slack."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from agentrunner.domain.slack import SlackMessage


class SlackRequestVerifier(Protocol):
    """Tells whether a request really comes from Slack (signed with the app's secret)."""

    def problem(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        """Why the request is not Slack's (missing headers, stale timestamp, wrong
        signature), or None when its signature over the raw `body` is valid. `headers`
        have lower-case names."""
        ...


class SlackReplies(Protocol):
    """Sends agentrunner's answers to Slack.

    Contract: returns once Slack accepted the message; rate limits (429) are waited out
    after Slack's Retry-After a bounded number of times; anything else raises
    `SlackUnavailableError` (retryable: the caller's bus redelivers) or
    `SlackRejectedError` (Slack refused the message itself), never an SDK exception.
    """

    async def respond(self, response_url: str, message: SlackMessage) -> None:
        """Post `message` to a command's or an interaction's `response_url`."""
        ...

    async def post(self, channel: str, message: SlackMessage, *, thread_ts: str | None = None) -> None:
        """Post `message` in `channel` (in the thread of `thread_ts` when given), as the bot."""
        ...

    async def close(self) -> None:
        """Release HTTP sessions."""
        ...
