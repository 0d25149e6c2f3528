"""What counts as a secret in what agentrunner shows, and how it is masked."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentrunner.domain.redaction import (
    MASK,
    _secret_name,
    is_secret_name,
    mask_arguments,
    mask_command,
    mask_prose,
    mask_text,
    mask_url,
)

# A password as it appears in a URL: anything, percent-encoded where the URL needs it.
# Text a URL can carry (no lone surrogates: they have no UTF-8 form).
_TEXT = st.characters(exclude_categories=["Cs"])
passwords = (
    st.text(_TEXT, min_size=4, max_size=40).map(lambda text: quote(text, safe="")).filter(lambda p: MASK not in p)
)


@given(password=passwords, user=st.sampled_from(["", "agentrunner", "default"]))
def test_a_urls_password_never_survives_masking(password: str, user: str) -> None:
    url = f"postgresql+asyncpg://{user}:{password}@db.internal:5432/agentrunner?sslmode=require"

    shown = f"{user}:{MASK}" if user else MASK

    assert mask_url(url) == f"postgresql+asyncpg://{shown}@db.internal:5432/agentrunner?sslmode=require"


@given(value=st.text(_TEXT, min_size=6, max_size=30))
def test_a_credential_query_value_never_survives_masking(value: str) -> None:
    for name in ("token", "api_key", "key", "sig", "password", "X-Amz-Signature", "access_token"):
        masked = mask_url(f"https://hooks.example.com/in?{name}={quote(value)}&page=2")

        assert masked == f"https://hooks.example.com/in?{name}={MASK}&page=2"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@cache:6379/0", f"redis://{MASK}@cache:6379/0"),
        ("https://ghp_abcdefghijklmnopqrstuvwxyz@github.com/o/r", f"https://{MASK}@github.com/o/r"),
        ("amqp://agentrunner:pw@broker:5672/", f"amqp://agentrunner:{MASK}@broker:5672/"),
        ("https://kb.example.com/mcp?region=eu#top", "https://kb.example.com/mcp?region=eu#top"),
        ("http://[broken@host", f"http://{MASK}@host"),
    ],
)
def test_urls_keep_where_they_point(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_arguments_lose_secret_flag_values_assignments_and_token_shaped_values() -> None:
    argv = [
        "npx", "-y", "@modelcontextprotocol/server-github", "--token", "abc", "--api-key=xyz", "--port", "8080",
        "GITHUB_TOKEN=ghx", "sk-proj-0123456789abcdef", "--bot", "xoxb-1111-2222-abcdef", "--verbose",
        "https://u:p@kb/mcp?token=t",
    ]  # fmt: skip

    assert mask_arguments(argv) == [
        "npx", "-y", "@modelcontextprotocol/server-github", "--token", MASK, f"--api-key={MASK}", "--port", "8080",
        f"GITHUB_TOKEN={MASK}", MASK, "--bot", MASK, "--verbose", f"https://u:{MASK}@kb/mcp?token={MASK}",
    ]  # fmt: skip
    assert mask_command("kb-server --stdio") == "kb-server --stdio"
    assert mask_command("kb-server --password hunter2") == f"kb-server --password {MASK}"


def test_prose_keeps_its_words_and_loses_its_credentials() -> None:
    text = "connect to https://me:pw@kb.internal/mcp?key=k failed; the key sk-ant-0123456789abcd was refused"

    assert (
        mask_prose(text)
        == f"connect to https://me:{MASK}@kb.internal/mcp?key={MASK} failed; the key {MASK} was refused"
    )
    assert mask_text("max_tokens and a plain sentence") == "max_tokens and a plain sentence"


@given(st.text(max_size=200), st.sampled_from(["", "-", "--", " "]))
def test_a_names_secrecy_is_the_same_remembered_or_not(name: str, dashes: str) -> None:
    # Short names are remembered (asked again at every start of every process), long
    # ones worked out each time: both answers must be the rule's.
    for asked in (dashes + name, dashes + name + "_token", dashes + "api_key" + name):
        assert is_secret_name(asked) == _secret_name(asked)
        assert is_secret_name(asked) == is_secret_name(asked)  # asked twice: remembered once


def test_a_long_secret_name_is_still_a_secret_name() -> None:
    assert is_secret_name("x" * 100 + "_password")
    assert not is_secret_name("x" * 100 + "_colour")
    assert is_secret_name("Authorization")
