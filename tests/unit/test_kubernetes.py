"""deploy/kubernetes/ without a cluster (issue 26, item 3): every object valid against the
Kubernetes and KEDA schemas, and held to the contract the compose test holds
docker-compose.yml to (tests/unit/test_docker_compose.py): the roles the code serves, their
ports and probes, real settings, the migration before the roles, the 30 s drain, secrets
referenced and never written, and only the orchestrator and slack reachable from outside.
The KEDA triggers name the queues of the shipped agents, pool by pool."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from agentrunner.adapters.metrics.prometheus import PrometheusMetrics
from agentrunner.domain.agent import ExecutionMode
from agentrunner.domain.roles import ALL_ROLES, HTTP_ROLES, WORKER_ROLES
from agentrunner.runtime.queues import POOL_OF_MODE
from agentrunner.runtime.topics import agent_queue
from agentrunner.settings import Settings
from tests.conftest import REPO
from tests.kubernetes_manifests import (
    KUBERNETES_VERSION,
    MANIFESTS,
    Manifest,
    manifests,
    pod_templates,
    reachable_from_outside,
    validate,
)

DISTRIBUTED = MANIFESTS / "distributed"
EMBEDDED = MANIFESTS / "embedded"
ALL = manifests()
SETTINGS = Settings(_env_file=None)
KNOWN_SETTINGS = {name.upper() for name in Settings.model_fields}
SECRETS = "agentrunner-secrets"
POOL_MODES = {
    pool: frozenset(mode for mode, its_pool in POOL_OF_MODE.items() if its_pool == pool)
    for pool in dict.fromkeys(POOL_OF_MODE.values())
}
# The drain: in-flight work gets 30 s after SIGTERM (node/serving.py, the pools' stop).
DRAIN_SECONDS = 30


def _distributed(kind: str) -> dict[str, dict[str, Any]]:
    """Objects of `kind` in the distributed layout (the Prometheus alternative left out), by name."""
    return {m.name: m.body for m in manifests(DISTRIBUTED) if m.kind == kind and m.path.parent == DISTRIBUTED}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(int(p["containerPort"]) for p in container["ports"] if p["name"] == port)


def _probes(container: dict[str, Any]) -> dict[str, tuple[str, int]]:
    return {
        kind: (container[kind]["httpGet"]["path"], _port_number(container, container[kind]["httpGet"]["port"]))
        for kind in ("readinessProbe", "livenessProbe")
    }


def _role(deployment: dict[str, Any]) -> str:
    command = _container(deployment)["command"]
    assert command[:2] == ["agentrunner", "serve"], command
    return str(command[2])


@pytest.mark.parametrize("manifest", ALL, ids=str)
def test_every_object_is_valid_against_its_schema(manifest: Manifest) -> None:
    validate(manifest)


def test_a_misspelt_field_is_refused_by_both_schemas() -> None:
    """The check above would pass anything if the schemas let unknown fields through."""
    deployment = next(m for m in ALL if m.kind == "Deployment")
    scaled = next(m for m in ALL if m.kind == "ScaledObject")
    broken_deployment = {**deployment.body, "spec": {**deployment.body["spec"], "replica": 2}}
    broken_scaled = {**scaled.body, "spec": {**scaled.body["spec"], "maxReplicas": 2}}

    for broken in (Manifest(deployment.path, broken_deployment), Manifest(scaled.path, broken_scaled)):
        with pytest.raises(Exception, match="Additional properties are not allowed"):
            validate(broken)


def test_the_schemas_are_read_as_kubernetes_validate_reads_them() -> None:
    """`validate` reads kubernetes-validate's schema files itself (once, not per object):
    the library's own check agrees with it on a good object and on a broken one."""
    deployment = next(m for m in ALL if m.kind == "Deployment")
    broken = {**deployment.body, "spec": {**deployment.body["spec"], "replica": 2}}

    assert kubernetes_validate.validate(deployment.body, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_every_role_the_code_serves_has_a_deployment() -> None:
    served = {_role(deployment) for deployment in _distributed("Deployment").values()}

    assert served == set(ALL_ROLES)


@pytest.mark.parametrize("role", HTTP_ROLES)
def test_every_http_role_listens_on_its_port_with_probes_and_a_service(role: str) -> None:
    port = SETTINGS.port_of(role)  # type: ignore[arg-type]
    deployment = _distributed("Deployment")[f"agentrunner-{role}"]
    container = _container(deployment)
    service = _distributed("Service")[f"agentrunner-{role}"]

    assert container["command"][:3] == ["agentrunner", "serve", role]
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert _probes(container) == {"readinessProbe": ("/health/ready", port), "livenessProbe": ("/health/live", port)}
    assert [p["port"] for p in service["spec"]["ports"]] == [port]
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("role", WORKER_ROLES)
def test_every_pool_serves_its_probes_on_its_health_port_and_publishes_no_service(role: str) -> None:
    container = _container(_distributed("Deployment")[f"agentrunner-{role}"])
    command = container["command"]
    health_port = int(command[command.index("--health-port") + 1])

    assert _probes(container) == {
        "readinessProbe": ("/health/ready", health_port),
        "livenessProbe": ("/health/live", health_port),
    }
    assert f"agentrunner-{role}" not in _distributed("Service")


def test_the_embedded_layout_runs_every_role_in_one_pod_that_is_never_two() -> None:
    (deployment,) = [m.body for m in manifests(EMBEDDED) if m.kind == "Deployment"]
    container = _container(deployment)
    ports = {SETTINGS.port_of(role) for role in HTTP_ROLES}

    assert container["command"] == ["agentrunner", "up"]
    assert {p["containerPort"] for p in container["ports"]} == ports
    assert _probes(container) == {
        "readinessProbe": ("/health/ready", SETTINGS.orchestrator_port),
        "livenessProbe": ("/health/live", SETTINGS.orchestrator_port),
    }
    # One SQLite file and one in-memory bus: a second pod, even for a moment, would split them.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DATA_DIR"] in {mount["mountPath"] for mount in container["volumeMounts"]}
    assert env["ENABLE_API_AUTH"] == "true"


def test_the_migration_runs_as_a_job_that_does_not_loop() -> None:
    (job,) = _distributed("Job").values()
    spec = job["spec"]["template"]["spec"]

    assert spec["containers"][0]["command"] == ["agentrunner", "db", "upgrade"]
    assert spec["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] <= 2, "a failed migration waits for an operator"


@pytest.mark.parametrize("manifest", [m for m, _ in pod_templates(ALL)], ids=str)
def test_every_pod_requests_resources_drains_and_runs_as_the_image_user(manifest: Manifest) -> None:
    spec = manifest.body["spec"]["template"]["spec"]
    dockerfile_user = re.findall(r"^USER\s+(\d+)", (REPO / "Dockerfile").read_text(), flags=re.MULTILINE)[-1]

    for container in spec["containers"]:
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), container["name"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert str(spec["securityContext"]["runAsUser"]) == dockerfile_user
    if manifest.kind == "Deployment":
        assert spec["terminationGracePeriodSeconds"] > DRAIN_SECONDS


@pytest.mark.parametrize("manifest", [m for m in ALL if m.kind == "Deployment"], ids=str)
def test_every_deployment_has_a_disruption_budget(manifest: Manifest) -> None:
    labels = manifest.body["spec"]["template"]["metadata"]["labels"]
    budgets = [
        m.body["spec"]
        for m in ALL
        if m.kind == "PodDisruptionBudget"
        and m.path.parent == manifest.path.parent
        and m.body["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]

    assert len(budgets) == 1


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        (DISTRIBUTED, {"orchestrator": {SETTINGS.orchestrator_port}, "slack": {SETTINGS.slack_port}}),
        (EMBEDDED, {"embedded": {SETTINGS.orchestrator_port, SETTINGS.slack_port}}),
    ],
    ids=["distributed", "embedded"],
)
def test_only_the_orchestrator_and_slack_are_reachable_from_outside(
    folder: Path, expected: dict[str, set[int]]
) -> None:
    objects = [m for m in manifests(folder) if m.path.parent == folder]
    exposed = {}
    for _, template in pod_templates(objects):
        ports = {int(p["containerPort"]) for c in template["spec"]["containers"] for p in c.get("ports", [])}
        labels = template["metadata"]["labels"]
        exposed[labels["app.kubernetes.io/component"]] = reachable_from_outside(objects, labels, ports)

    assert {component: ports for component, ports in exposed.items() if ports} == expected


_SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|API_KEYS|_URL)$")


@pytest.mark.parametrize("manifest", [m for m, _ in pod_templates(ALL)], ids=str)
def test_secrets_are_referenced_never_written(manifest: Manifest) -> None:
    for container in manifest.body["spec"]["template"]["spec"]["containers"]:
        literal = {e["name"]: e.get("value") for e in container.get("env", []) if "value" in e}
        sources = [source.get("secretRef", {}).get("name") for source in container.get("envFrom", [])]

        assert [name for name in literal if _SECRET_NAME.search(name)] == []
        assert set(literal) <= KNOWN_SETTINGS
        assert SECRETS in sources, "the keys and service URLs come from the operator's Secret"
    assert not [m for m in ALL if m.kind == "Secret"], "no Secret with values in the repository"


def test_the_shared_settings_and_the_secret_keys_are_real_settings() -> None:
    (config,) = _distributed("ConfigMap").values()
    example = (DISTRIBUTED / "secrets.env.example").read_text()
    secret_keys = dict(line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#"))

    assert set(config["data"]) <= KNOWN_SETTINGS
    assert config["data"]["ENABLE_API_AUTH"] == "true"
    assert set(secret_keys) <= KNOWN_SETTINGS
    assert {"API_KEYS", "DATABASE_URL", "REDIS_URL", "RABBITMQ_URL"} <= set(secret_keys)
    assert secret_keys["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert secret_keys["RABBITMQ_URL"].startswith("amqp://")
    assert not set(secret_keys) & set(config["data"]), "a setting has one home"


def _shipped_agents() -> dict[str, ExecutionMode]:
    agents = {}
    for path in sorted((REPO / "config" / "agents").glob("*.yml")):
        document = yaml.safe_load(path.read_text())
        agents[document["name"]] = ExecutionMode(document["execution_mode"])
    return agents


def test_keda_scales_each_pool_on_the_queues_of_its_agents() -> None:
    scaled = _distributed("ScaledObject")
    (auth,) = _distributed("TriggerAuthentication").values()
    prefix = Settings(_env_file=None).rabbitmq_exchange_prefix
    agents = _shipped_agents()

    assert {spec["spec"]["scaleTargetRef"]["name"] for spec in scaled.values()} == {
        f"agentrunner-{pool}" for pool in POOL_MODES
    }
    for pool, modes in POOL_MODES.items():
        spec = scaled[f"agentrunner-{pool}"]["spec"]
        triggers = spec["triggers"]
        queues = {trigger["metadata"]["queueName"] for trigger in triggers}
        names = {trigger["name"] for trigger in triggers}

        assert queues == {f"{prefix}.q.{agent_queue(name)}" for name, mode in agents.items() if mode in modes}, pool
        assert {trigger["type"] for trigger in triggers} == {"rabbitmq"}
        assert {trigger["authenticationRef"]["name"] for trigger in triggers} == {auth["metadata"]["name"]}
        assert set(re.findall(r"[a-z_]+", spec["advanced"]["scalingModifiers"]["formula"])) == names
        assert spec["minReplicaCount"] >= 1
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "host", "name": SECRETS, "key": "RABBITMQ_URL"}]


def test_the_prometheus_alternative_scales_the_same_pools_on_our_metrics() -> None:
    alternative = [m.body for m in manifests(DISTRIBUTED / "keda-prometheus") if m.kind == "ScaledObject"]
    exposed = {family.name for family in PrometheusMetrics().registry.collect()}

    assert {body["metadata"]["name"] for body in alternative} == set(_distributed("ScaledObject"))
    for body in alternative:
        pool = body["spec"]["scaleTargetRef"]["name"].removeprefix("agentrunner-")
        (trigger,) = body["spec"]["triggers"]
        query = trigger["metadata"]["query"]

        assert trigger["type"] == "prometheus"
        assert set(re.findall(r"agentrunner_[a-z_]+", query)) <= exposed
        assert "agentrunner_queue_ready" in query
        assert set(re.findall(r'pool="([a-z]+)"', query)) == {pool}
