"""docker-compose.yml is for users with Docker (there is no engine here): this test holds
it to the settings and roles of the code, and to what `--scale` needs."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from agentrunner.node import ALL_ROLES
from agentrunner.settings import Settings
from tests.conftest import REPO

SEED_SERVICES = {
    "state-manager": "state",
    "config-service": "config",
    "agent-orchestrator": "orchestrator",
    "scheduler-service": "scheduler",
    "slack-gateway": "slack",
}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    found: dict[str, Any] = compose["services"]
    return found


def _healthcheck_url(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return str(test[-1])


@pytest.mark.parametrize(("name", "role"), SEED_SERVICES.items())
def test_every_http_role_has_the_seed_service_name_port_and_health(
    services: dict[str, Any], name: str, role: str
) -> None:
    service = services[name]
    port = Settings(_env_file=None).port_of(role)  # type: ignore[call-arg, arg-type]

    assert service["command"] == ["agentrunner", "serve", role]
    assert service["ports"] == [f"{port}:{port}"]
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


def test_the_image_installs_the_package_and_ships_the_agents() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()

    assert "pip install ." in dockerfile
    assert "COPY config ./config" in dockerfile
    assert "USER agentrunner" in dockerfile
