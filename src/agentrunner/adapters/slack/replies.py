"""Replies to Slack through slack_sdk: AsyncWebhookClient for response_url, AsyncWebClient
for chat.postMessage, both waiting out 429s with the SDK's rate-limit retry handler.

A response_url is a URL from a request: it must be Slack's (https://hooks.slack.com/, or
the origin of SLACK_API_URL for a proxy or a test's fake Slack), and it is posted through
the egress guard: its own aiohttp session whose resolver answers only checked addresses,
so the connection goes to the address that was checked. chat.postMessage goes to the
operator's SLACK_API_URL, on a session of its own."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from agentrunner.adapters.egress import EgressGuard
from agentrunner.domain.egress import EgressPolicy, EgressRefusedError, is_slack_response_url, origin_of
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
        guard: EgressGuard | None = None,
    ) -> None:
        self._bot_token = bot_token
        self._api_url = api_url
        self._timeout = timeout_seconds
        self._retries = rate_limit_retries
        policy = guard.policy if guard is not None else EgressPolicy()
        # A response_url may also be on the origin the operator points Slack at.
        self._policy = EgressPolicy(
            allowed_networks=policy.allowed_networks,
            allow_http_webhooks=policy.allow_http_webhooks,
            slack_origins=(origin_of(api_url),),
        )
        self._guard = EgressGuard(self._policy) if guard is None else guard
        self._session: aiohttp.ClientSession | None = None
        self._guarded: aiohttp.ClientSession | None = None

    def _retry_handlers(self) -> list[AsyncConnectionErrorRetryHandler | AsyncRateLimitErrorRetryHandler]:
        return [
            AsyncConnectionErrorRetryHandler(max_retry_count=1),
            AsyncRateLimitErrorRetryHandler(max_retry_count=self._retries),
        ]

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        return self._session

    def _guarded_http(self) -> aiohttp.ClientSession:
        if self._guarded is None or self._guarded.closed:
            self._guarded = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(resolver=_GuardedResolver(self._guard), use_dns_cache=False),
                trust_env=False,
            )
        return self._guarded

    async def _check(self, response_url: str) -> None:
        """Refuse a response_url that is not Slack's, or whose address the guard refuses
        (aiohttp connects to a literal address without asking the resolver: checked here)."""
        if not is_slack_response_url(response_url, self._policy):
            raise SlackRejectedError("refused: a response_url must be Slack's (https://hooks.slack.com/...)")
        parts = urlsplit(response_url)
        try:
            await self._guard.addresses(parts.hostname or "", parts.port or 443)
        except EgressRefusedError as exc:
            raise SlackRejectedError(f"response_url {exc.reason}") from exc
        except OSError as exc:
            raise SlackUnavailableError("response_url: Slack could not be reached (its name does not resolve)") from exc

    async def respond(self, response_url: str, message: SlackMessage) -> None:
        await self._check(response_url)
        client = AsyncWebhookClient(
            response_url,
            timeout=self._timeout,
            session=self._guarded_http(),
            retry_handlers=list(self._retry_handlers()),
        )
        try:
            response = await client.send(
                text=message.text,
                blocks=message.blocks or None,
                response_type="ephemeral" if message.ephemeral else "in_channel",
                replace_original=message.replace_original,
            )
        except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
            # Coarse: the driver's message would name the address tried.
            raise SlackUnavailableError("response_url: Slack could not be reached (unreachable)") from exc
        # The status only: a response_url's answer body is not passed on.
        if response.status_code == 429 or response.status_code >= 500:
            raise SlackUnavailableError(
                f"Slack answered {response.status_code} to a response_url post after retries",
                status=response.status_code,
            )
        if response.status_code >= 400:
            raise SlackRejectedError(
                f"Slack refused a response_url post ({response.status_code}); "
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
        for session in (self._session, self._guarded):
            if session is not None:
                await session.close()
        self._session = self._guarded = None


class _GuardedResolver(AbstractResolver):
    """An aiohttp resolver answering only the addresses the egress guard checked."""

    def __init__(self, guard: EgressGuard) -> None:
        self._guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await self._guard.addresses(host, port)
        except EgressRefusedError as exc:
            raise OSError(exc.reason) from exc
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


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
