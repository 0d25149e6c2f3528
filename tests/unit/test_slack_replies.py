"""The Slack replies adapter drives slack_sdk against a fake Slack: response_url posts and
chat.postMessage arrive as Slack expects them, 429s are waited out after Retry-After, and
what still fails raises agentrunner's errors, never the SDK's."""

from __future__ import annotations

import inspect
import time

import pytest
import slack_sdk.errors
from slack_sdk.web.slack_response import SlackResponse

from agentrunner.adapters.egress import EgressGuard
from agentrunner.adapters.slack.replies import SlackSdkReplies, _translate
from agentrunner.domain.egress import EgressPolicy, parse_networks
from agentrunner.domain.errors import SlackError, SlackRejectedError, SlackUnavailableError
from agentrunner.domain.slack import SlackMessage
from tests.fakes.slack_server import BOT_TOKEN, FakeSlack
from tests.ports import free_port

# The fake Slack listens on loopback: the operator's exception the tests make.
LOOPBACK_ALLOWED = EgressGuard(EgressPolicy(allowed_networks=parse_networks("127.0.0.0/8")))


async def test_a_response_url_post_reaches_slack() -> None:
    with FakeSlack() as slack:
        replies = SlackSdkReplies(bot_token=None, api_url=slack.api_url, guard=LOOPBACK_ALLOWED)
        try:
            await replies.respond(slack.response_url("r1"), SlackMessage(text="Paris.", ephemeral=True))
        finally:
            await replies.close()
    [post] = slack.messages("/response/r1")
    assert post.body["text"] == "Paris."
    assert post.body["response_type"] == "ephemeral"


async def test_chat_post_message_waits_out_a_429_after_retry_after_then_posts() -> None:
    with FakeSlack(retry_after=1) as slack:
        slack.fail_with(429)
        replies = SlackSdkReplies(bot_token=BOT_TOKEN, api_url=slack.api_url)
        began = time.monotonic()
        try:
            await replies.post("C1", SlackMessage(text="Paris."), thread_ts="1700000000.000100")
        finally:
            await replies.close()
        took = time.monotonic() - began
    assert len(slack.refused) == 1, "the first call was rate-limited"
    [post] = slack.messages("chat.postMessage")
    assert post.body == {"channel": "C1", "text": "Paris.", "thread_ts": "1700000000.000100"}
    assert took >= 1.0, "waited Retry-After before trying again"


async def test_a_reply_still_rate_limited_after_retries_raises_a_retryable_error() -> None:
    with FakeSlack(retry_after=0) as slack:
        slack.fail_with(429, 429, 429, 429)
        replies = SlackSdkReplies(
            bot_token=BOT_TOKEN, api_url=slack.api_url, rate_limit_retries=1, guard=LOOPBACK_ALLOWED
        )
        try:
            with pytest.raises(SlackUnavailableError) as caught:
                await replies.post("C1", SlackMessage(text="Paris."))
            with pytest.raises(SlackUnavailableError):
                await replies.respond(slack.response_url(), SlackMessage(text="Paris."))
        finally:
            await replies.close()
    assert caught.value.retryable
    assert slack.messages() == []


async def test_slack_refusing_a_message_raises_a_rejection_that_says_why() -> None:
    with FakeSlack() as slack:
        replies = SlackSdkReplies(bot_token="xoxb-wrong", api_url=slack.api_url)
        try:
            with pytest.raises(SlackRejectedError, match="invalid_auth"):
                await replies.post("C1", SlackMessage(text="Paris."))
            with pytest.raises(SlackRejectedError, match="SLACK_BOT_TOKEN"):
                await SlackSdkReplies(bot_token=None).post("C1", SlackMessage(text="Paris."))
        finally:
            await replies.close()


async def test_slack_unreachable_raises_a_retryable_error() -> None:
    port = free_port()
    replies = SlackSdkReplies(bot_token=BOT_TOKEN, api_url=f"http://127.0.0.1:{port}/api/", guard=LOOPBACK_ALLOWED)
    try:
        with pytest.raises(SlackUnavailableError, match="could not be reached"):
            await replies.post("C1", SlackMessage(text="Paris."))
        with pytest.raises(SlackUnavailableError):
            await replies.respond(f"http://127.0.0.1:{port}/response/x", SlackMessage(text="Paris."))
    finally:
        await replies.close()


def _sdk_errors() -> list[type[Exception]]:
    return [
        cls
        for _, cls in inspect.getmembers(slack_sdk.errors, inspect.isclass)
        if issubclass(cls, Exception) and cls is not slack_sdk.errors.SlackApiError
    ]


@pytest.mark.parametrize("error", _sdk_errors(), ids=lambda cls: cls.__name__)
def test_every_error_slack_sdk_exports_becomes_a_slack_error(error: type[Exception]) -> None:
    try:
        raised = error("boom")
    except TypeError:  # SlackTokenRotationError wraps an api error
        # SlackApiError's constructor is not annotated in slack_sdk.
        raised = error(slack_sdk.errors.SlackApiError("boom", {"ok": False}))  # type: ignore[no-untyped-call]
    translated = _translate(raised, "chat.postMessage")
    assert isinstance(translated, SlackError)
    assert "chat.postMessage" in translated.message


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, {"ok": False, "error": "ratelimited"}, SlackUnavailableError),
        (503, {"ok": False, "error": "service_unavailable"}, SlackUnavailableError),
        (200, {"ok": False, "error": "channel_not_found"}, SlackRejectedError),
    ],
)
def test_api_errors_are_retryable_only_when_slack_says_not_now(
    status: int, body: dict[str, object], expected: type[SlackError]
) -> None:
    response = SlackResponse(
        client=None, http_verb="POST", api_url="u", req_args={}, data=body, headers={}, status_code=status
    )
    error = slack_sdk.errors.SlackApiError("failed", response)  # type: ignore[no-untyped-call]
    assert type(_translate(error, "chat.postMessage")) is expected
