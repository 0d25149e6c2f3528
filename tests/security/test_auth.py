"""Who may call, tried as an attacker would against `agentrunner up`: wrong keys, guessing
keys, short keys, an unauthenticated platform on the network, cross-site writes and DNS
rebinding against a local one, old TLS."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.platform import RunningPlatform, platform_env, start_platform
from tests.security.conftest import ADMIN_KEY, TEAM_A_KEY, TEAM_B_KEY, TENANTS_ENV

AGENT = "name: echo-assistant\nagent_type: demo\nexecution_mode: autonomous\nllm_config: {provider: echo, model: e}\n"


def _workdir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    workdir = tmp_path_factory.mktemp(name)
    (workdir / "agents").mkdir()
    (workdir / "agents" / "echo-assistant.yml").write_text(AGENT)
    return workdir


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    running = start_platform(_workdir(tmp_path_factory, "tenants"), dict(TENANTS_ENV))
    yield running
    assert running.stop() == 0, running.log_path.read_text()


@pytest.fixture(scope="module")
def open_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """A platform with auth off, as `agentrunner up` runs on a laptop."""
    running = start_platform(_workdir(tmp_path_factory, "local"), {"ENABLE_API_AUTH": "false"})
    yield running
    assert running.stop() == 0, running.log_path.read_text()


def _from(address: str) -> httpx.Client:
    """A client whose requests come from `address` (another loopback address is another client)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def _start_refused(tmp_path: Path, env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    full_env, _ = platform_env(tmp_path, env)
    return subprocess.run(
        [sys.executable, "-m", "agentrunner", *(command or ("up",))],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_wrong_or_missing_key_is_401_and_a_tenants_key_is_accepted(tenants: RunningPlatform) -> None:
    url = f"{tenants.url('orchestrator')}/agents"
    with _from("127.0.0.1") as http:
        wrong = http.get(url, headers={"X-API-Key": TEAM_A_KEY[:-1] + "x"})
        missing = http.get(url)
        whole_entry = http.get(url, headers={"X-API-Key": f"team-a:{TEAM_A_KEY}"})  # the name is no part of the key
        team_a = http.get(url, headers={"X-API-Key": TEAM_A_KEY})
        admin = http.get(url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})

    assert [wrong.status_code, missing.status_code, whole_entry.status_code] == [401, 401, 401]
    assert wrong.json()["error"]["code"] == "unauthorized"
    assert (team_a.status_code, admin.status_code) == (200, 200)


def test_work_is_recorded_for_the_named_tenant_of_each_key(tenants: RunningPlatform) -> None:
    url = f"{tenants.url('orchestrator')}/agents/echo-assistant/invoke"
    owners = {}
    with _from("127.0.0.1") as http:
        for name, key in (("team-a", TEAM_A_KEY), ("team-b", TEAM_B_KEY), ("ops", ADMIN_KEY)):
            answer = http.post(url, json={"task_data": {"prompt": "hi"}}, headers={"X-API-Key": key}, timeout=60)
            assert answer.status_code == 200, answer.text
            execution = http.get(
                f"{tenants.url('orchestrator')}/executions/{answer.json()['execution_id']}",
                headers={"X-API-Key": key},
            )
            owners[name] = execution.json()["tenant"]

    assert owners == {"team-a": "team-a", "team-b": "team-b", "ops": "ops"}


def test_an_address_guessing_keys_is_throttled_and_others_are_not(tenants: RunningPlatform) -> None:
    url = f"{tenants.url('state')}/usage"
    with _from("127.0.0.7") as attacker, _from("127.0.0.1") as other:
        guesses = [attacker.get(url, headers={"X-API-Key": f"guess-{n:032d}"}).status_code for n in range(11)]
        right_key_now = attacker.get(url, headers={"X-API-Key": TEAM_A_KEY})
        someone_else = other.get(url, headers={"X-API-Key": TEAM_A_KEY})

    assert guesses == [401] * 10 + [429]
    assert right_key_now.status_code == 429
    assert right_key_now.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(right_key_now.headers["retry-after"]) <= 60
    assert someone_else.status_code == 200


@pytest.mark.parametrize(
    ("api_keys", "said"),
    [
        ("team-a:short-key", 'python -c "import secrets; print(secrets.token_urlsafe(32))"'),
        (f"team-a:{TEAM_A_KEY},team-a:{TEAM_B_KEY}", "'team-a' has two keys"),
        (TEAM_A_KEY, "TENANT_ID_SECRET"),  # a bare key, and no server secret to derive its tenant id with
    ],
)
def test_keys_that_are_short_repeated_or_bare_without_a_secret_are_refused_at_start(
    tmp_path: Path, api_keys: str, said: str
) -> None:
    started = _start_refused(tmp_path, {"ENABLE_API_AUTH": "true", "API_KEYS": api_keys})

    assert started.returncode == 1
    assert said in started.stderr.replace("\n", " ").replace("  ", " ") or said in started.stderr
    assert "short-key" not in started.stderr + started.stdout


@pytest.mark.parametrize("command", [("up",), ("serve", "state"), ("cluster", "up")])
def test_without_auth_a_network_host_is_refused_unless_said_out_loud(tmp_path: Path, command: tuple[str, ...]) -> None:
    env = {"ENABLE_API_AUTH": "false", "HOST": "0.0.0.0", "RABBITMQ_URL": "amqp://127.0.0.1:1/"}
    started = _start_refused(tmp_path, env, *command)

    assert started.returncode == 1
    assert "ALLOW_UNAUTHENTICATED_NETWORK=true" in " ".join(started.stderr.split())


def test_with_auth_off_a_cross_site_write_or_a_foreign_host_is_refused(open_local: RunningPlatform) -> None:
    invoke = f"{open_local.url('orchestrator')}/agents/echo-assistant/invoke"
    with _from("127.0.0.1") as http:
        form = http.post(invoke, data={"task_data": "x"})
        text = http.post(invoke, content=b'{"task_data": {"prompt": "x"}}', headers={"Content-Type": "text/plain"})
        page = http.post(
            f"{open_local.url('orchestrator')}/executions/anything/cancel", headers={"Origin": "https://evil.example"}
        )
        rebound = http.get(f"{open_local.url('orchestrator')}/executions", headers={"Host": "evil.example:8003"})
        json_call = http.post(invoke, json={"task_data": {"prompt": "hi"}}, timeout=60)
        flagged = http.post(
            invoke,
            content=b'{"task_data": {"prompt": "hi"}}',
            headers={"Content-Type": "text/plain", "X-AgentRunner-Client": "cli"},
            timeout=60,
        )
        health = http.get(f"{open_local.url('orchestrator')}/health/live", headers={"Host": "evil.example"})

    assert [form.status_code, text.status_code, page.status_code] == [403, 403, 403]
    assert form.json()["error"]["code"] == "cross_site_refused"
    assert rebound.status_code == 400
    assert rebound.json()["error"]["code"] == "host_not_allowed"
    assert json_call.status_code == 200, json_call.text
    assert flagged.status_code != 403
    assert health.status_code == 200


def test_the_cli_is_let_through_with_auth_off(open_local: RunningPlatform) -> None:
    cli = subprocess.run(
        [sys.executable, "-m", "agentrunner", "invoke", "echo-assistant", "hi"],
        env={**open_local.env, "ORCHESTRATOR_PORT": str(open_local.ports["orchestrator"])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert cli.returncode == 0, cli.stderr


def _self_signed(directory: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _handshake(port: int, context: ssl.SSLContext) -> str | None:
    """The TLS version agreed with 127.0.0.1:`port`, or None when the server refused."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.version()
        except (ssl.SSLError, ConnectionResetError):
            return None


def _client(maximum: ssl.TLSVersion, ciphers: str) -> ssl.SSLContext:
    """A client that offers what an old or careless one would (TLS 1.0-1.1 are deprecated)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = maximum
    context.set_ciphers(ciphers)
    return context


def test_tls_is_1_2_at_least_with_modern_ciphers_and_hsts_when_set(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    (tmp_path / "agents").mkdir()
    env, ports = platform_env(
        tmp_path,
        {"ENABLE_TLS": "true", "TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key), "HSTS_SECONDS": "31536000"},
    )
    log = tmp_path / "agentrunner.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentrunner", "up"], cwd=tmp_path, env=env, stdout=output, stderr=output
        )
    try:
        base = f"https://127.0.0.1:{ports['state']}"
        deadline = time.monotonic() + 30
        live = None
        while live is None:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the platform did not serve HTTPS in 30 s"
            try:
                live = httpx.get(f"{base}/health/live", verify=False, timeout=1)
            except httpx.TransportError:
                time.sleep(0.1)
        modern = _handshake(ports["state"], _client(ssl.TLSVersion.TLSv1_3, "DEFAULT"))
        old_protocol = _handshake(ports["state"], _client(ssl.TLSVersion.TLSv1_1, "ALL:@SECLEVEL=0"))
        weak_cipher = _handshake(
            ports["state"],
            _client(ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:AES128-SHA:@SECLEVEL=0"),
        )
    finally:
        process.terminate()
        process.wait(30)

    assert live.status_code == 200
    assert live.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert modern == "TLSv1.3"
    assert old_protocol is None
    assert weak_cipher is None, weak_cipher
