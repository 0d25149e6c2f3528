"""The egress guard's address policy (domain/egress.py): every address of a refused range
is refused, in every form (IPv4, IPv4-mapped, NAT64, 6to4), unless the operator allowed its
network; public addresses pass; URLs with credentials or other schemes are refused."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentrunner.domain.egress import (
    EgressPolicy,
    EgressRefusedError,
    check_webhook_url,
    is_public,
    is_slack_response_url,
    parse_networks,
    split_url,
    status_reason,
)

REFUSED_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
]
REFUSED_V6 = ["::1/128", "::/128", "fc00::/7", "fe80::/10", "ff00::/8", "2001:db8::/32"]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:81b::200e"]


def _in(network: str) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    net = ipaddress.ip_network(network)
    return st.integers(0, net.num_addresses - 1).map(lambda offset: net[offset])


refused_v4 = st.sampled_from(REFUSED_V4).flatmap(_in)
refused_v6 = st.sampled_from(REFUSED_V6).flatmap(_in)


@given(refused_v4)
def test_every_refused_ipv4_address_is_refused_in_every_form(address: ipaddress.IPv4Address) -> None:
    forms: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [
        address,
        ipaddress.IPv6Address(f"::ffff:{address}"),  # IPv4-mapped
        ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(address)),  # NAT64
        ipaddress.IPv6Address((0x2002 << 112) | (int(address) << 80)),  # 6to4
    ]
    assert [form for form in forms if is_public(form) or EgressPolicy().allows(form)] == []


@given(refused_v6)
def test_every_refused_ipv6_address_is_refused(address: ipaddress.IPv6Address) -> None:
    assert not EgressPolicy().allows(address)


@given(refused_v4)
def test_an_allowed_network_opens_its_addresses_and_only_those(address: ipaddress.IPv4Address) -> None:
    policy = EgressPolicy(allowed_networks=parse_networks(f"{address}/32"))
    assert policy.allows(address)
    assert policy.allows(ipaddress.IPv6Address(f"::ffff:{address}"))
    neighbour = ipaddress.IPv4Address((int(address) + 1) % 2**32)
    assert not policy.allows(neighbour) or is_public(neighbour)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert EgressPolicy().allows(ipaddress.ip_address(address))


def test_a_scoped_ipv6_address_is_refused() -> None:
    assert not is_public(ipaddress.IPv6Address("fe80::1%eth0"))


def test_networks_must_be_cidrs() -> None:
    assert parse_networks(" 10.0.0.0/8, fd00::/8 ,") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    )
    with pytest.raises(ValueError, match="CIDR"):
        parse_networks("10.0.0.0/8,internal")


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pw@example.com/",
        "https://user@example.com/",
        "file:///etc/passwd",
        "gopher://example.com/",
        "https:///nohost",
        "https://example.com:99999/",
    ],
)
def test_urls_with_credentials_other_schemes_or_no_host_are_refused(url: str) -> None:
    with pytest.raises(EgressRefusedError):
        split_url(url)


@pytest.mark.parametrize(
    ("url", "policy", "refused"),
    [
        ("https://hooks.example.com/x", EgressPolicy(), False),
        ("http://hooks.example.com/x", EgressPolicy(), True),
        ("http://hooks.example.com/x", EgressPolicy(allow_http_webhooks=True), False),
        ("https://169.254.169.254/latest", EgressPolicy(), True),
        ("https://[::ffff:127.0.0.1]/", EgressPolicy(), True),
        ("https://localhost/", EgressPolicy(), True),
        ("https://127.0.0.1/", EgressPolicy(allowed_networks=parse_networks("127.0.0.0/8")), False),
    ],
)
def test_webhook_urls_are_checked_before_they_are_accepted(url: str, policy: EgressPolicy, refused: bool) -> None:
    if refused:
        with pytest.raises(EgressRefusedError):
            check_webhook_url(url, policy)
    else:
        check_webhook_url(url, policy)


def test_a_response_url_must_be_slacks_or_the_operators_slack_origin() -> None:
    policy = EgressPolicy(slack_origins=("http://127.0.0.1:9999",))
    assert is_slack_response_url("https://hooks.slack.com/commands/1/2", policy)
    assert is_slack_response_url("http://127.0.0.1:9999/response/1", policy)
    assert not is_slack_response_url("https://hooks.slack.com.evil.example/commands/1", policy)
    assert not is_slack_response_url("https://x@hooks.slack.com/commands/1", policy)
    assert not is_slack_response_url("http://hooks.slack.com/commands/1", policy)
    assert not is_slack_response_url("http://127.0.0.1:9998/response/1", policy)


def test_status_reasons_are_coarse() -> None:
    assert [status_reason(code) for code in (301, 404, 418, 500, 503)] == [
        "HTTP 3xx",
        "HTTP 4xx",
        "HTTP 4xx",
        "HTTP 5xx",
        "HTTP 5xx",
    ]
