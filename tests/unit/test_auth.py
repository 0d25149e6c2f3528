"""API keys as configured: tenants named or derived with an HMAC, admins, refusals at start."""

from __future__ import annotations

import hashlib
import ssl

import pytest

from agentrunner.api.access import ApiKey, check_listen_host, check_unique, default_allowed_hosts, parse_api_keys
from agentrunner.api.server import modern_tls
from agentrunner.domain.errors import ConfigError
from agentrunner.tracing import tenant_of_key

KEY_A = "team-a-key-0123456789abcdef0123456789"
KEY_B = "team-b-key-0123456789abcdef0123456789"


def test_named_keys_are_their_tenants_and_admin_keys_are_admins() -> None:
    tenants = parse_api_keys(f"team-a:{KEY_A}, team-b:{KEY_B},", setting="API_KEYS", admin=False, tenant_secret=None)
    admins = parse_api_keys(f"ops:{KEY_A}x", setting="ADMIN_API_KEYS", admin=True, tenant_secret=None)

    assert [(key.tenant, key.secret, key.admin) for key in tenants] == [
        ("team-a", KEY_A.encode(), False),
        ("team-b", KEY_B.encode(), False),
    ]
    assert [(key.tenant, key.admin) for key in admins] == [("ops", True)]
    assert KEY_A not in repr(tenants)


def test_a_bare_keys_tenant_is_an_hmac_under_the_server_secret_not_a_plain_hash() -> None:
    (key,) = parse_api_keys(KEY_A, setting="API_KEYS", admin=False, tenant_secret=b"server-secret")
    (other,) = parse_api_keys(KEY_A, setting="API_KEYS", admin=False, tenant_secret=b"another-secret")

    assert key.tenant == tenant_of_key(KEY_A.encode(), b"server-secret")
    assert key.tenant.startswith("key-")
    assert key.tenant != other.tenant
    assert key.tenant[4:] not in hashlib.sha256(KEY_A.encode()).hexdigest()


def test_a_bare_key_without_a_server_secret_is_refused_saying_what_to_set() -> None:
    with pytest.raises(ConfigError, match="TENANT_ID_SECRET"):
        parse_api_keys(KEY_A, setting="API_KEYS", admin=False, tenant_secret=None)


@pytest.mark.parametrize(
    "raw", ["team-a:short", "short-bare-key", f"team-a:{'k' * 31}", f"team-a:{'k' * 20} {'k' * 20}"]
)
def test_a_key_under_32_characters_is_refused_with_how_to_make_one(raw: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_api_keys(raw, setting="API_KEYS", admin=False, tenant_secret=b"s")

    assert "secrets.token_urlsafe(32)" in refused.value.message
    assert "API_KEYS entry 1" in refused.value.message
    assert "short" not in refused.value.message  # the key itself is never repeated


@pytest.mark.parametrize("name", ["Team-A", "-team", "team a", "t" * 65, "team/a", ""])
def test_an_invalid_tenant_name_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="tenant name"):
        parse_api_keys(f"{name}:{KEY_A}", setting="API_KEYS", admin=False, tenant_secret=b"s")


def test_a_tenant_or_a_key_listed_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="'team-a' has two keys"):
        check_unique([ApiKey("team-a", KEY_A.encode()), ApiKey("team-a", KEY_B.encode())])
    with pytest.raises(ConfigError, match="listed twice"):
        check_unique([ApiKey("team-a", KEY_A.encode()), ApiKey("ops", KEY_A.encode(), admin=True)])


@pytest.mark.parametrize(
    ("host", "auth", "allowed", "refused"),
    [
        ("127.0.0.1", False, False, False),
        ("::1", False, False, False),
        ("localhost", False, False, False),
        ("0.0.0.0", False, False, True),
        ("192.168.1.5", False, False, True),
        ("0.0.0.0", True, False, False),
        ("0.0.0.0", False, True, False),
    ],
)
def test_without_auth_only_loopback_is_listened_on_unless_said_out_loud(
    host: str, auth: bool, allowed: bool, refused: bool
) -> None:
    if refused:
        with pytest.raises(ConfigError, match="ALLOW_UNAUTHENTICATED_NETWORK=true"):
            check_listen_host(host, auth=auth, network_allowed=allowed)
    else:
        check_listen_host(host, auth=auth, network_allowed=allowed)


def test_the_default_allowed_hosts_are_loopback_names_and_the_bound_host() -> None:
    assert default_allowed_hosts("127.0.0.1") == ("localhost", "127.0.0.1", "::1")
    assert default_allowed_hosts("0.0.0.0") == ("localhost", "127.0.0.1", "::1")
    assert default_allowed_hosts("10.0.0.7") == ("localhost", "127.0.0.1", "::1", "10.0.0.7")


def test_a_served_tls_context_takes_tls_1_2_at_least_and_only_forward_secret_aead_ciphers() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("TLSv1")  # what older uvicorn versions set by default

    modern_tls(context)

    names = [cipher["name"] for cipher in context.get_ciphers()]
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert names
    assert all(("GCM" in name or "CHACHA20" in name) for name in names), names
    assert not [name for name in names if not name.startswith(("TLS_", "ECDHE-", "DHE-"))], names
