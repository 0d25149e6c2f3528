"""Replies to Slack through slack_sdk: AsyncWebhookClient for response_url, AsyncWebClient
for chat.postMessage, both waiting out 429s with the SDK's rate-limit retry handler."""

from __future__ import annotations

import asyncio

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from agentrunner.domain.errors import SlackError, SlackRejectedError, SlackUnavailableError
from agentrunner.domain.slack import SlackMessage
from agentrunner.logs import get_logger

log = get_logger(__name__)

DEFAULT_API_URL = "https://slack.com/api/"
# Web API errors that say "not now" rather than "never": the bus delivers the reply again.
_TRANSIENT_API_ERRORS = frozenset({"ratelimited", "service_unavailable", "fatal_error", "internal_error"})


class SlackSdkReplies:
    """A `SlackReplies` on slack_sdk's async clients, sharing one aiohttp session."""

    def __init__(
        self,
        *,
        bot_token: str | None,
        api_url: str = DEFAULT_API_URL,
        rate_limit_retries: int = 3,
        timeout_seconds: int = 10,
    ) -> None:
        self._bot_token = bot_token
        self._api_url = api_url
        self._timeout = timeout_seconds
        self._retries = rate_limit_retries
        self._session: aiohttp.ClientSession | None = None

    def _retry_handlers(self) -> list[AsyncConnectionErrorRetryHandler | AsyncRateLimitErrorRetryHandler]:
        return [
            AsyncConnectionErrorRetryHandler(max_retry_count=1),
            AsyncRateLimitErrorRetryHandler(max_retry_count=self._retries),
        ]

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        return self._session

    async def respond(self, response_url: str, message: SlackMessage) -> None:
        client = AsyncWebhookClient(
            response_url, timeout=self._timeout, session=self._http(), retry_handlers=list(self._retry_handlers())
        )
        try:
            response = await client.send(
                text=message.text,
                blocks=message.blocks or None,
                response_type="ephemeral" if message.ephemeral else "in_channel",
                replace_original=message.replace_original,
            )
        except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
            raise _translate(exc, "response_url") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise SlackUnavailableError(
                f"Slack answered {response.status_code} to a response_url post after retries: {response.body[:200]}",
                status=response.status_code,
            )
        if response.status_code >= 400:
            raise SlackRejectedError(
                f"Slack refused a response_url post ({response.status_code}: {response.body[:200]}); "
                "a response_url takes 5 messages within 30 minutes of the command",
                status=response.status_code,
            )

    async def post(self, channel: str, message: SlackMessage, *, thread_ts: str | None = None) -> None:
        if not self._bot_token:
            raise SlackRejectedError(
                f"cannot post in Slack channel {channel}: set SLACK_BOT_TOKEN (xoxb-...) with the chat:write scope"
            )
        client = AsyncWebClient(
            token=self._bot_token,
            base_url=self._api_url,
            timeout=self._timeout,
            session=self._http(),
            retry_handlers=list(self._retry_handlers()),
        )
        try:
            await client.chat_postMessage(
                channel=channel, text=message.text, blocks=message.blocks or None, thread_ts=thread_ts
            )
        except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
            raise _translate(exc, "chat.postMessage") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _translate(exc: Exception, call: str) -> SlackError:
    """The one place slack_sdk and aiohttp errors become agentrunner's."""
    if isinstance(exc, SlackApiError):
        # A SlackResponse, or (for a body that is not JSON) the raw aiohttp response.
        status = int(getattr(exc.response, "status_code", None) or getattr(exc.response, "status", 0) or 0)
        data = getattr(exc.response, "data", None)
        error = data.get("error") if isinstance(data, dict) else None
        detail = f"{call} failed with {status}: {error or str(data or exc)[:200]}"
        if status == 429 or status >= 500 or error in _TRANSIENT_API_ERRORS:
            return SlackUnavailableError(f"{detail} (after retries)", status=status)
        return SlackRejectedError(detail, status=status, error=error)
    if isinstance(exc, aiohttp.ClientError | TimeoutError | asyncio.TimeoutError):
        return SlackUnavailableError(f"{call}: Slack could not be reached: {exc!r}")
    return SlackRejectedError(f"{call}: {exc}")
