"""Slack's request signatures: what Slack signs passes; a wrong secret, a changed body,
missing headers or a timestamp over 5 minutes off do not, each saying why."""

from __future__ import annotations

import time

import pytest

from agentrunner.adapters.slack.verifier import SlackSignatureVerifier
from tests.fakes.slack_server import SIGNING_SECRET, command_body, slack_headers


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def test_a_request_signed_as_slack_does_passes() -> None:
    body = command_body()
    assert SlackSignatureVerifier(SIGNING_SECRET).problem(body, _lower(slack_headers(body))) is None


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ("another-secret", b"a=1", "does not match"),
        ("signed-for-a=1", b"a=2", "does not match"),
        ({}, b"a=1", "missing"),
        ({"X-Slack-Signature": "v0=00"}, b"a=1", "missing"),
        ("stale", b"a=1", "5 minutes"),
        ("future", b"a=1", "5 minutes"),
        ({"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"}, b"a=1", "Unix time"),
    ],
)
def test_requests_not_signed_by_slack_now_are_refused_with_the_reason(
    headers: dict[str, str] | str, body: bytes, reason: str
) -> None:
    # Signed now, not when the parameters were collected (a long suite would make them stale).
    if headers == "another-secret":
        headers = slack_headers(body, "another-secret")
    elif headers == "signed-for-a=1":
        headers = slack_headers(b"a=1")
    elif isinstance(headers, str):
        headers = slack_headers(body, timestamp=int(time.time()) + (-301 if headers == "stale" else 400))
    problem = SlackSignatureVerifier(SIGNING_SECRET).problem(body, _lower(headers))
    assert problem is not None
    assert reason in problem
