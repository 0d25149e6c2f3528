"""Webhook signatures and retry waits."""

from __future__ import annotations

import hashlib
import hmac

from agentrunner.domain.webhook import MAX_BACKOFF_SECONDS, backoff_seconds, signature, verify_signature

SECRET = b"whsec-test"
BODY = b'{"event":"execution.finished"}'


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET, b"1700000000." + BODY, hashlib.sha256).hexdigest()

    assert signature(SECRET, 1700000000, BODY) == f"t=1700000000,v1={expected}"


def test_a_receiver_accepts_the_signature_and_refuses_tampering_other_secrets_and_old_timestamps() -> None:
    header = signature(SECRET, 1700000000, BODY)

    assert verify_signature(SECRET, header, BODY, now=1700000100)
    assert not verify_signature(SECRET, header, BODY + b" ", now=1700000100)
    assert not verify_signature(b"other", header, BODY, now=1700000100)
    assert not verify_signature(SECRET, header, BODY, now=1700000000 + 301)
    assert not verify_signature(SECRET, "garbage", BODY, now=1700000000)
    assert not verify_signature(SECRET, header.replace("t=1700000000", "t=1700000001"), BODY, now=1700000000)


def test_retry_waits_double_from_the_base_up_to_an_hour() -> None:
    assert [backoff_seconds(n, 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_seconds(40, 1.0) == MAX_BACKOFF_SECONDS
