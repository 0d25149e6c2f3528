"""Where the platform may call on a caller's or a model's behalf: the address policy of the
egress guard (adapters/egress.py), and the coarse reasons a caller is shown.

An address is refused when it is not a public unicast address: loopback, link-local
(169.254/16, the cloud metadata endpoints among them), private (RFC 1918), CGNAT
(100.64/10), multicast, unspecified, reserved and documentation ranges, IPv6 ULA
(fc00::/7) and link-local (fe80::/10), and the IPv4-mapped, NAT64 and 6to4 forms of
refused IPv4 addresses. The operator opens exceptions by network (EGRESS_ALLOWED_NETWORKS),
never the caller. A URL with userinfo (`https://user:pass@host/`) is refused: it is a
classic way to make a URL look like another host's.

Pure: no I/O; resolving names and connecting are the adapter's job.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from agentrunner.domain.errors import BadRequestError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# What a caller reads about an outbound call that did not succeed: never the driver's
# message, the address tried or the body of what answered.
REFUSED_PRIVATE = "refused: private address"
REFUSED_URL = "refused: url not allowed"
UNREACHABLE = "unreachable"
TIMEOUT = "timeout"

# NAT64 and 6to4 embed an IPv4 address that is checked in turn.
# Refused whatever the Python version's flags say (IETF protocol assignments include
# addresses some versions call global).
_SPECIAL_V4 = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "192.0.0.0/24",
        "192.0.2.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")


def status_reason(status: int) -> str:
    """`HTTP 4xx` or `HTTP 5xx` (or `HTTP 3xx`: redirects are not followed)."""
    return f"HTTP {status // 100}xx"


def parse_networks(value: str | Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs (comma-separated, or a list) as networks; raises `ValueError` naming the bad one."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    networks: list[IPNetwork] = []
    for part in (piece.strip() for piece in parts):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ValueError(f"{part!r} is not a network in CIDR form (e.g. 10.0.0.0/8 or fd00::/8)") from exc
    return tuple(networks)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, compatible), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64 or address in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    packed = int(address)
    if packed >> 32 == 0 and packed > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(packed)
    return None


def is_public(address: IPAddress) -> bool:
    """True for a globally routable unicast address (see the module doc for what is not)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return False
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
    elif any(address in network for network in _SPECIAL_V4):
        return False
    return not (
        address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
        or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
        or not address.is_global
    )


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """The operator's exceptions: networks that may be called although not public, and
    whether webhooks may use plain `http`."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    allow_http_webhooks: bool = False
    # Origins (`scheme://host[:port]`) a Slack response_url may have besides hooks.slack.com.
    slack_origins: tuple[str, ...] = field(default=())

    def allows(self, address: IPAddress, extra: Sequence[IPNetwork] = ()) -> bool:
        """True when `address` is public, or inside a network the operator allowed."""
        if is_public(address):
            return True
        candidates = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(
            candidate.version == network.version and candidate in network
            for candidate in candidates
            for network in (*self.allowed_networks, *extra)
        )


class EgressRefusedError(BadRequestError):
    """An outbound URL the egress guard refuses: its scheme, its userinfo, or an address
    that is not public. `reason` is what a caller may read."""

    code = "egress_refused"

    def __init__(self, message: str, *, reason: str = REFUSED_URL) -> None:
        super().__init__(message, reason=reason)
        self.reason = reason


def split_url(url: str, *, schemes: Sequence[str] = ("https", "http")) -> SplitResult:
    """`url` split, once its shape is acceptable for an outbound call: one of `schemes`, a
    host, no userinfo. Raises `EgressRefusedError` saying what is wrong."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise EgressRefusedError(f"{url!r} is not a valid URL") from exc
    if parts.scheme not in schemes:
        raise EgressRefusedError(f"URL scheme {parts.scheme or '(none)'!r} is not allowed here (use {schemes[0]})")
    if not parts.hostname:
        raise EgressRefusedError("the URL has no host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise EgressRefusedError("a URL with credentials (user:password@) is not allowed")
    return parts


def literal_address(host: str) -> IPAddress | None:
    """`host` as an IP address when it is one (brackets and zone ids allowed), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_webhook_url(url: str, policy: EgressPolicy) -> None:
    """Refuse at once what can be refused without resolving: a scheme other than https
    (unless the operator allows http), userinfo, a literal address that is not allowed,
    `localhost`. Raises `EgressRefusedError`; the address is checked again on delivery."""
    schemes = ("https", "http") if policy.allow_http_webhooks else ("https",)
    parts = split_url(url, schemes=schemes)
    host = (parts.hostname or "").rstrip(".").lower()
    address = literal_address(host)
    if (address is not None and not policy.allows(address)) or (
        address is None and (host == "localhost" or host.endswith(".localhost")) and not policy.allowed_networks
    ):
        raise EgressRefusedError(
            f"webhook_url {host!r} is not a public address (an operator may allow networks with "
            "EGRESS_ALLOWED_NETWORKS)",
            reason=REFUSED_PRIVATE,
        )


SLACK_RESPONSE_ORIGIN = "https://hooks.slack.com"


def is_slack_response_url(url: str, policy: EgressPolicy) -> bool:
    """True for a Slack response_url: https://hooks.slack.com/..., or an origin the operator
    points Slack at (SLACK_API_URL's, for a proxy or a test's fake Slack)."""
    try:
        parts = split_url(url)
    except EgressRefusedError:
        return False
    origin = f"{parts.scheme}://{parts.netloc.lower()}"
    return origin in (SLACK_RESPONSE_ORIGIN, *policy.slack_origins)


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of `url`."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"
