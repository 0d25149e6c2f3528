"""Who may call: API keys and their tenants, the throttle on failed authentications, and
the checks a served socket makes before any app sees a request (Host header, cross-site
writes, HSTS)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentrunner.api.errors import error_response
from agentrunner.domain.errors import ConfigError
from agentrunner.tracing import tenant_of_key

MIN_KEY_CHARS = 32
MAX_KEY_CHARS = 512
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MAKE_A_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# Headers a browser cannot add to a cross-site request without CORS approving it.
CLIENT_HEADERS = (b"x-agentrunner-client", b"x-requested-with")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True, repr=False)
class ApiKey:
    """One accepted API key: the tenant it stands for and whether it is an admin's."""

    tenant: str
    secret: bytes
    admin: bool = False

    def __repr__(self) -> str:  # the secret never shows
        return f"ApiKey(tenant={self.tenant!r}, admin={self.admin})"


def parse_api_keys(raw: str, *, setting: str, admin: bool, tenant_secret: bytes | None) -> tuple[ApiKey, ...]:
    """The keys of `API_KEYS`-style text: comma-separated `tenant:key` entries, or bare keys
    whose tenant is `key-` + an HMAC-SHA256 of the key under `tenant_secret`.

    Raises `ConfigError` (naming `setting` and the entry's position, never the key) for a key
    under MIN_KEY_CHARS, an invalid tenant name, or a bare key without `tenant_secret`."""
    keys: list[ApiKey] = []
    for position, entry in enumerate((part.strip() for part in raw.split(",")), start=1):
        if not entry:
            continue
        name, colon, secret = entry.partition(":")
        if not colon:
            name, secret = "", entry
        where = f"{setting} entry {position}"
        if colon and not TENANT_NAME.match(name):
            raise ConfigError(
                f"{where}: tenant name {name[:70]!r} is not lowercase letters, digits, '.', '_' or '-'"
                " (1-64 characters, starting with a letter or digit), as in team-a:<key>"
            )
        if not MIN_KEY_CHARS <= len(secret) <= MAX_KEY_CHARS or not secret.isprintable() or " " in secret:
            raise ConfigError(
                f"{where}: an API key must be {MIN_KEY_CHARS} to {MAX_KEY_CHARS} printable characters without"
                f" spaces (this one has {len(secret)}); make one with: {MAKE_A_KEY}"
            )
        if not name:
            if tenant_secret is None:
                raise ConfigError(
                    f"{where} is a bare key: name its tenant (team-a:<key>) or set TENANT_ID_SECRET, the server"
                    f" secret its tenant id is derived from (make one with: {MAKE_A_KEY})"
                )
            name = tenant_of_key(secret.encode(), tenant_secret)
        keys.append(ApiKey(name, secret.encode(), admin))
    return tuple(keys)


def check_unique(keys: Iterable[ApiKey]) -> None:
    """Raise `ConfigError` when two entries share a tenant name or a key."""
    tenants: set[str] = set()
    digests: set[bytes] = set()
    for key in keys:
        if key.tenant in tenants:
            raise ConfigError(f"tenant {key.tenant!r} has two keys in API_KEYS/ADMIN_API_KEYS: one key per tenant")
        digest = hashlib.sha256(key.secret).digest()
        if digest in digests:
            raise ConfigError(f"the key of tenant {key.tenant!r} is listed twice in API_KEYS/ADMIN_API_KEYS")
        tenants.add(key.tenant)
        digests.add(digest)


class FailedAuthThrottle:
    """Counts failed authentications per client address (an IPv6 client by its /64, which
    one host can fill): past `max_failures` in `window_seconds`, the address is refused
    until its window ends. Remembers at most `max_addresses` (the oldest forgotten first),
    so memory stays bounded."""

    def __init__(
        self,
        max_failures: int = 10,
        window_seconds: float = 60.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_failures
        self._window = window_seconds
        self._capacity = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # address -> (count, window start)

    def wait_seconds(self, address: str) -> float:
        """0 when `address` may try, else the seconds until it may again."""
        if not self._failures:
            return 0.0
        address = _counted_as(address)
        count, since = self._failures.get(address, (0, 0.0))
        left = since + self._window - self._clock()
        if left <= 0:
            self._failures.pop(address, None)
            return 0.0
        return left if count >= self._max else 0.0

    def failed(self, address: str) -> bool:
        """Record one failed authentication from `address`; True when it is the one that
        gets the address throttled."""
        address = _counted_as(address)
        now = self._clock()
        count, since = self._failures.pop(address, (0, now))
        if since + self._window <= now:
            count, since = 0, now
        self._failures[address] = (count + 1, since)
        while len(self._failures) > self._capacity:
            self._failures.popitem(last=False)
        return count + 1 == self._max


def _counted_as(address: str) -> str:
    if ":" not in address:  # IPv4 (or no address): as it is, without parsing on every request
        return address
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def client_address(scope: Scope) -> str:
    """The peer's address (the proxy's, behind one)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) only reaches this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_allowed_hosts(bind_host: str) -> tuple[str, ...]:
    """The Host names a platform without auth answers: loopback names and the bound host."""
    wildcard = bind_host in ("", "0.0.0.0", "::")
    return LOOPBACK_NAMES if wildcard or bind_host in LOOPBACK_NAMES else (*LOOPBACK_NAMES, bind_host)


def _host_name(header: bytes) -> str:
    """The name of a Host header, without its port (`[::1]:8003` -> `::1`)."""
    text = header.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class NetworkGuard:
    """Checks on every request a served socket receives, before any role app sees it:
    - `allowed_hosts` (None: any): a Host header naming another host is refused (400), so a
      name rebound to 127.0.0.1 in the caller's DNS does not reach a local platform;
    - `require_client_header`: a POST/PUT/PATCH/DELETE a browser could send cross-site (a
      form's or text body, or any request carrying Origin/Sec-Fetch-Site) must have a JSON
      body or an `X-AgentRunner-Client`/`X-Requested-With` header (403), which no page can add
      without CORS, and none is granted;
    - `hsts_seconds` > 0: a Strict-Transport-Security header on every answer.
    Paths under `exempt_prefixes` (health probes, Slack's signed form posts) skip the first two."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: tuple[str, ...] | None,
        require_client_header: bool,
        hsts_seconds: int = 0,
        exempt_prefixes: tuple[str, ...] = ("/health/", "/slack/"),
    ) -> None:
        self._app = app
        self._hosts = None if allowed_hosts is None or "*" in allowed_hosts else {h.lower() for h in allowed_hosts}
        self._require_client_header = require_client_header
        self._hsts = f"max-age={hsts_seconds}; includeSubDomains".encode() if hsts_seconds > 0 else None
        self._exempt = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if self._hsts is not None:
            send = self._with_hsts(send)
        if not str(scope.get("path", "")).startswith(self._exempt):
            refusal = self._refusal(scope)
            if refusal is not None:
                status, code, message = refusal
                await error_response(status, code, message)(scope, receive, send)
                return
        await self._app(scope, receive, send)

    def _refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        headers = dict(scope.get("headers") or [])
        if self._hosts is not None and _host_name(headers.get(b"host", b"")) not in self._hosts:
            return 400, "host_not_allowed", "this Host is not one the platform answers to: add it to ALLOWED_HOSTS"
        if self._require_client_header and str(scope.get("method", "")).upper() in STATE_CHANGING:
            content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            json_body = content_type == b"application/json" or content_type.endswith(b"+json")
            from_browser = b"origin" in headers or b"sec-fetch-site" in headers
            if not json_body and (content_type or from_browser) and not any(h in headers for h in CLIENT_HEADERS):
                return (
                    403,
                    "cross_site_refused",
                    "with API auth off, a request that changes something needs a JSON body"
                    " or an X-AgentRunner-Client header (a browser form cannot send either)",
                )
        return None

    def _with_hsts(self, send: Send) -> Send:
        hsts = self._hsts
        assert hsts is not None

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"strict-transport-security", hsts)]
            await send(message)

        return send_with_hsts


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def same_secret(offered: bytes, keys: tuple[ApiKey, ...]) -> ApiKey | None:
    """The key `offered` is, compared in constant time against every key (the time taken
    does not say which one matched)."""
    found: ApiKey | None = None
    for key in keys:
        if hmac.compare_digest(offered, key.secret):
            found = key
    return found


def check_listen_host(host: str, *, auth: bool, network_allowed: bool) -> None:
    """Raise `ConfigError` when a platform without API auth would listen beyond loopback
    and ALLOW_UNAUTHENTICATED_NETWORK does not say that is meant."""
    if auth or network_allowed or is_loopback(host):
        return
    raise ConfigError(
        f"HOST={host} would let anyone on the network call this platform, and ENABLE_API_AUTH is off:"
        " turn auth on (ENABLE_API_AUTH=true with API_KEYS), listen on 127.0.0.1, or set"
        " ALLOW_UNAUTHENTICATED_NETWORK=true if an unauthenticated network service is really meant"
    )
