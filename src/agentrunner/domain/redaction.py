"""What counts as a secret in what agentrunner shows, and how it is masked.

One place decides, for every answer and repr that shows configuration: URLs lose their
userinfo and their credential query values (`?token=`, `key=`, `sig=`, ...), command-line
arguments lose the value after a secret flag (`--token X`), of a `KEY=VALUE` with a
secret-sounding key, and any value shaped like a vendor token (`sk-...`, `xoxb-...`,
`ghp_...`, `AKIA...`, a JWT). Masking errs on the side of hiding: a false positive costs a
reader one value, a false negative leaks a credential.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

MASK = "********"

# A name (field, header, query parameter, flag, variable) that holds a secret.
SECRET_NAME = re.compile(
    r"(pass(word|wd|phrase)?|pwd|secret|api[_-]?key|access[_-]?key|private[_-]?key|"
    r"credential|auth|cookie|signature|bearer|jwt|token(?!s))",
    re.IGNORECASE,
)
# Short query parameter names that carry credentials (signed URLs, API keys).
_SECRET_PARAMS = frozenset({"key", "sig", "pw", "pass", "code", "apikey", "x-amz-signature", "x-goog-signature"})
# Values that are credentials whatever they are called: OpenAI/Anthropic keys, Slack
# tokens, GitHub and GitLab tokens, AWS access key ids, Google API keys, JWTs, Bearer values.
_TOKEN_SHAPE = re.compile(
    r"(\bsk-[A-Za-z0-9_\-]{8,}|\bxox[abposr]-[A-Za-z0-9\-]{6,}|\bxapp-[A-Za-z0-9\-]{6,}|"
    r"\bgh[pousr]_[A-Za-z0-9]{16,}|\bgithub_pat_[A-Za-z0-9_]{16,}|\bglpat-[A-Za-z0-9_\-]{16,}|"
    r"\b(AKIA|ASIA)[A-Z0-9]{12,}|\bAIza[A-Za-z0-9_\-]{20,}|\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-.]+|"
    r"\bBearer\s+\S+)"
)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://\S+$")
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()]+")
_USERINFO = re.compile(r"(?<=//)[^/?#@\s]*@")


def is_secret_name(name: str) -> bool:
    """Whether a field, header, parameter, flag or variable named `name` holds a secret."""
    # The same few hundred names come back all the time (every agent's fields, at every
    # start of every process): remembered, unless long enough to be somebody's data.
    return _known_secret_name(name) if len(name) <= _REMEMBERED_NAME else _secret_name(name)


def _secret_name(name: str) -> bool:
    bare = name.strip().lstrip("-").lower()
    return bool(SECRET_NAME.search(bare)) or bare in _SECRET_PARAMS


_REMEMBERED_NAME = 64  # characters
_known_secret_name = functools.lru_cache(maxsize=4096)(_secret_name)


def looks_like_token(value: str) -> bool:
    """Whether `value` contains something shaped like a vendor credential."""
    return bool(_TOKEN_SHAPE.search(value))


def mask_url(url: str) -> str:
    """`url` with its userinfo masked (`user:********@host`, or `********@host` when the
    user part alone may be a token) and the value of every credential query parameter
    masked; the rest (scheme, host, port, path, other parameters) stays readable."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
    except ValueError:  # an unparsable URL (bad port, bracket): mask every userinfo it may hold
        return _USERINFO.sub(f"{MASK}@", _mask_query(url))
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        shown = f"{user}:{MASK}" if colon and user else MASK
        url = url.replace(f"//{netloc}", f"//{shown}@{host}", 1)
    return _mask_query(url)


def _mask_query(url: str) -> str:
    base, question, rest = url.partition("?")
    if not question:
        return url
    query, hash_, fragment = rest.partition("#")
    masked = []
    for pair in query.split("&"):
        name, equals, value = pair.partition("=")
        secret = equals and value and (is_secret_name(name) or looks_like_token(value))
        masked.append(f"{name}={MASK}" if secret else pair)
    return f"{base}?{'&'.join(masked)}{hash_}{fragment}"


def mask_text(value: str) -> str:
    """A string value: a URL masked as a URL, else every token-shaped part masked."""
    if _URL.match(value):
        return mask_url(value)
    return _TOKEN_SHAPE.sub(MASK, value)


def mask_prose(text: str) -> str:
    """Free text (an error message, a reason) with every URL in it masked like `mask_url`
    and every token-shaped part masked."""
    return _TOKEN_SHAPE.sub(MASK, _URL_IN_TEXT.sub(lambda match: mask_url(match[0]), text))


def mask_arguments(arguments: Iterable[str]) -> list[str]:
    """A command line with its secrets masked: the value after a secret flag (`--token X`,
    `--api-key X`), the value of `--flag=X` or `NAME=X` with a secret-sounding name, URLs'
    credentials, and token-shaped values."""
    masked: list[str] = []
    after_secret_flag = False
    for argument in arguments:
        if after_secret_flag and not argument.startswith("-"):
            masked.append(MASK)
            after_secret_flag = False
            continue
        after_secret_flag = argument.startswith("-") and "=" not in argument and is_secret_name(argument)
        name, equals, value = argument.partition("=")
        if equals and value and not _URL.match(argument) and is_secret_name(name):
            masked.append(f"{name}={MASK}")
        else:
            masked.append(mask_text(argument))
    return masked


def mask_command(command: str) -> str:
    """A command written as one string, masked word by word like `mask_arguments`."""
    words = command.split()
    masked = mask_arguments(words)
    return command if masked == words else " ".join(masked)


def masked(value: Any) -> Any:
    """`value` with every field whose name looks secret replaced by a mask, and every
    string's credentials (URL userinfo and query secrets, token-shaped values) masked."""
    if isinstance(value, dict):
        return {key: MASK if is_secret_name(str(key)) and item else masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [masked(item) for item in value]
    if isinstance(value, str):
        return mask_text(value)
    return value
