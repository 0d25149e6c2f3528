"""docker-compose.yml is for users with Docker (there is no engine here): this test holds
it to the settings and roles of the code, to what `--scale` needs, and to safe defaults
(issue 19, rule 8): auth on, ports on 127.0.0.1, no management UI, every password from
`.env`, Redis with a password, an image that runs as non-root."""

from __future__ import annotations

import re
from typing import Any, Literal

import pytest

from agentrunner.node import ALL_ROLES
from agentrunner.settings import Settings
from tests.compose_file import (
    COMPOSE_FILE,
    MissingVariableError,
    published_ports,
    raw_services,
    required_variables,
)
from tests.compose_file import services as compose_services
from tests.conftest import REPO

# What an operator following .env.example sets: the keys and the three passwords.
OPERATOR_ENV = {
    "API_KEYS": "team-a:team-a-key-0123456789abcdef0123456789",
    "POSTGRES_PASSWORD": "pg0123456789abcdef",
    "REDIS_PASSWORD": "rd0123456789abcdef",
    "RABBITMQ_PASSWORD": "mq0123456789abcdef",
}
AGENTRUNNER_IMAGE = "agentrunner:latest"

# The HTTP roles (Settings.port_of takes these names only).
HttpRole = Literal["state", "config", "orchestrator", "scheduler", "slack"]
SEED_SERVICES: dict[str, HttpRole] = {
    "state-manager": "state",
    "config-service": "config",
    "agent-orchestrator": "orchestrator",
    "scheduler-service": "scheduler",
    "slack-gateway": "slack",
}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return raw_services()


def _healthcheck_url(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return str(test[-1])


@pytest.mark.parametrize(("name", "role"), SEED_SERVICES.items())
def test_every_http_role_has_the_seed_service_name_port_and_health(
    services: dict[str, Any], name: str, role: HttpRole
) -> None:
    service = services[name]
    port = Settings(_env_file=None).port_of(role)

    assert service["command"] == ["agentrunner", "serve", role]
    assert service["ports"] == [f"${{BIND_ADDRESS:-127.0.0.1}}:{port}:{port}"]
    assert _healthcheck_url(service) == f"http://127.0.0.1:{port}/health/ready"
    assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    for dependency in ("postgres", "redis", "rabbitmq"):
        assert service["depends_on"][dependency] == {"condition": "service_healthy"}


def test_the_autonomous_pool_can_be_scaled(services: dict[str, Any]) -> None:
    pool = services["autonomous-agent-pool"]

    assert "ports" not in pool
    assert "container_name" not in pool
    assert pool["command"][:3] == ["agentrunner", "serve", "autonomous"]
    health_port = pool["command"][pool["command"].index("--health-port") + 1]
    assert _healthcheck_url(pool) == f"http://127.0.0.1:{health_port}/health/ready"
    assert int(pool["stop_grace_period"].rstrip("s")) >= 30, "SIGTERM drains in-flight work for up to 30 s"


def test_every_role_the_code_serves_has_a_service(services: dict[str, Any]) -> None:
    served = {
        service["command"][2]
        for service in services.values()
        if isinstance(service.get("command"), list) and service["command"][:2] == ["agentrunner", "serve"]
    }

    assert served == set(ALL_ROLES)


def test_the_environment_names_real_settings(services: dict[str, Any]) -> None:
    known = {name.upper() for name in Settings.model_fields}
    for name, service in services.items():
        if "image" in service and service["image"] == "agentrunner:latest":
            assert set(service["environment"]) <= known, name
            assert service["environment"]["RABBITMQ_URL"].startswith("amqp://")
            assert service["environment"]["DATABASE_URL"].startswith("postgresql+asyncpg://")


def test_the_migration_runs_once_before_the_roles(services: dict[str, Any]) -> None:
    assert services["migrate"]["command"] == ["agentrunner", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"


def test_every_long_running_service_is_restarted_unless_stopped(services: dict[str, Any]) -> None:
    policies = {name: service.get("restart") for name, service in services.items()}

    assert policies.pop("migrate") == "no"  # a one-shot job: restarting would loop it
    assert policies == dict.fromkeys(policies, "unless-stopped")


def test_the_image_installs_the_package_and_ships_the_agents() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()

    assert "pip install ." in dockerfile
    assert "COPY config ./config" in dockerfile


def test_the_image_runs_as_a_non_root_user_with_auth_on() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)

    assert users, "the image names its user"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^ENV .*\bENABLE_API_AUTH=true\b", dockerfile, flags=re.MULTILINE)


def test_published_ports_bind_127_0_0_1_unless_the_operator_says_otherwise() -> None:
    default = {
        (name, port.address, port.target)
        for name, service in compose_services(OPERATOR_ENV).items()
        for port in published_ports(service)
    }
    opened = {
        port.address
        for service in compose_services({**OPERATOR_ENV, "BIND_ADDRESS": "0.0.0.0"}).values()
        for port in published_ports(service)
    }

    assert default, "the HTTP roles are published"
    assert {address for _, address, _ in default} == {"127.0.0.1"}, default
    assert opened == {"0.0.0.0"}, "BIND_ADDRESS in .env opens them"


def test_neither_the_management_ui_nor_a_backing_service_is_published() -> None:
    running = compose_services(OPERATOR_ENV)
    targets = {port.target for service in running.values() for port in published_ports(service)}

    assert "15672" not in targets
    assert "management" not in running["rabbitmq"]["image"]
    for backing in ("postgres", "redis", "rabbitmq"):
        assert "ports" not in running[backing], f"{backing} is reached through the compose network only"


def test_compose_refuses_to_start_without_the_keys_and_passwords() -> None:
    assert required_variables(COMPOSE_FILE.read_text()) >= set(OPERATOR_ENV)
    for missing in OPERATOR_ENV:
        with pytest.raises(MissingVariableError, match=missing):
            compose_services({**OPERATOR_ENV, missing: ""})


_SECRET_KEY = re.compile(r"(PASSWORD|PASS|SECRET|TOKEN|API_KEYS|REDISCLI_AUTH)$")
_REQUIRED_REFERENCE = re.compile(r"^\$\{[A-Z_]+:\?[^}]*\}$")
_URL_PASSWORD = re.compile(r"//[^/@:]*:([^@]*)@")


def test_no_credential_is_hard_coded(services: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    environments = {name: service.get("environment") or {} for name, service in services.items()}
    secrets = {
        (name, key): str(value)
        for name, environment in environments.items()
        for key, value in environment.items()
        if _SECRET_KEY.search(key)
    }
    url_passwords = [
        password
        for environment in environments.values()
        for value in environment.values()
        for password in _URL_PASSWORD.findall(str(value))
    ]

    assert "guest" not in text
    assert "postgres:postgres" not in text
    assert secrets, "the passwords are named in the environment"
    assert {key: value for key, value in secrets.items() if not _REQUIRED_REFERENCE.match(value)} == {}
    assert url_passwords, "the service URLs carry their passwords"
    assert [password for password in url_passwords if not _REQUIRED_REFERENCE.match(password)] == []


def test_the_roles_require_api_keys(services: dict[str, Any]) -> None:
    running = compose_services(OPERATOR_ENV)
    for name, service in running.items():
        if service.get("image") == AGENTRUNNER_IMAGE:
            assert service["environment"]["ENABLE_API_AUTH"] == "true", name
            assert service["environment"]["API_KEYS"] == OPERATOR_ENV["API_KEYS"], name


def test_redis_requires_the_password_the_roles_connect_with() -> None:
    running = compose_services(OPERATOR_ENV)
    password = OPERATOR_ENV["REDIS_PASSWORD"]
    command = running["redis"]["command"]
    words = command.split() if isinstance(command, str) else list(command)

    assert words[words.index("--requirepass") + 1].strip('"') == password
    assert running["redis"]["environment"]["REDISCLI_AUTH"] == password, "the healthcheck authenticates"
    for service in running.values():
        if service.get("image") == AGENTRUNNER_IMAGE:
            assert service["environment"]["REDIS_URL"].startswith(f"redis://:{password}@redis:")
            assert f":{OPERATOR_ENV['POSTGRES_PASSWORD']}@postgres:" in service["environment"]["DATABASE_URL"]
            assert f":{OPERATOR_ENV['RABBITMQ_PASSWORD']}@rabbitmq:" in service["environment"]["RABBITMQ_URL"]
