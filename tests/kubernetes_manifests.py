"""deploy/kubernetes/ read as a cluster reads it (there is none here): every object of every
manifest, checked against the Kubernetes API schemas that `kubernetes-validate` ships (no
network) and KEDA's CRDs kept in tests/fixtures/keda (KEDA 2.20.2, from kedacore/keda's
config/crd/bases at tag v2.20.2); and what a NetworkPolicy lets reach a pod."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import yaml
from referencing import Registry, Resource

from tests.conftest import REPO

MANIFESTS = REPO / "deploy" / "kubernetes"
KEDA_CRDS = REPO / "tests" / "fixtures" / "keda"
# The oldest Kubernetes minor still supported upstream when these were written: the
# manifests use nothing newer.
KUBERNETES_VERSION = "1.33"


@dataclass(frozen=True)
class Manifest:
    """One object of one manifest file."""

    path: Path
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}: {self.kind}/{self.name}"


def manifests(folder: Path = MANIFESTS) -> list[Manifest]:
    """Every object of every `*.yaml` under `folder`, in file order."""
    return [manifest for path in sorted(folder.rglob("*.yaml")) for manifest in _objects(path)]


@functools.cache
def _objects(path: Path) -> tuple[Manifest, ...]:
    # libyaml's loader where it is built: the pure-Python one takes seconds over these files.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(Manifest(path, body) for body in yaml.load_all(path.read_text(), Loader=loader) if body)


def _strict(schema: Any) -> Any:
    """A CRD's structural schema with unknown fields refused where Kubernetes prunes them:
    the API server drops a misspelt field silently, which a test should not."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if "properties" in strict and not strict.get("x-kubernetes-preserve-unknown-fields"):
        strict.setdefault("additionalProperties", False)
    return strict


@functools.cache
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the openAPIV3Schema of every CRD in tests/fixtures/keda."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(KEDA_CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        for version in spec["versions"]:
            api_version = f"{spec['group']}/{version['name']}"
            schemas[(api_version, spec["names"]["kind"])] = _strict(version["schema"]["openAPIV3Schema"])
    return schemas


@functools.cache
def _kubernetes_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """kubernetes-validate's strict schema of `kind` (what `kubernetes_validate.validate`
    checks), its 1.4 MB of shared definitions read once rather than once per object."""
    folder = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}.0-local-strict"
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)  # rbac.authorization.k8s.io/v1 -> rbac-v1
    path = folder / f"{kind.lower()}-{group}.json"
    if not path.is_file():
        raise kubernetes_validate.SchemaNotFoundError(kind=kind, version=KUBERNETES_VERSION, api_version=api_version)
    schema = json.loads(path.read_text())
    return jsonschema.Draft202012Validator(schema, registry=_definitions())


@functools.cache
def _definitions() -> Registry[Any]:
    """The shared definitions, under the `$id` the kinds' `$ref`s name."""
    folder = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}.0-local-strict"
    definitions: Resource[Any] = Resource.from_contents(json.loads((folder / "_definitions.json").read_text()))
    return definitions @ Registry()


def validate(manifest: Manifest) -> None:
    """Raise when `manifest` is not a valid object: a KEDA kind against its CRD, any other
    against the Kubernetes schemas (strict: unknown fields refused); a kind of neither
    raises too (`SchemaNotFoundError`)."""
    crd = _crd_schemas().get((manifest.body["apiVersion"], manifest.kind))
    if crd is not None:
        jsonschema.Draft7Validator(crd).validate(manifest.body)
        return
    _kubernetes_validator(manifest.body["apiVersion"], manifest.kind).validate(manifest.body)


def _matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether `labels` satisfy a label selector (matchLabels only: what these manifests use)."""
    assert set(selector) <= {"matchLabels"}, f"only matchLabels is understood here: {selector}"
    return all(labels.get(key) == value for key, value in (selector.get("matchLabels") or {}).items())


def pod_templates(objects: list[Manifest]) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    """Each Deployment and Job with its pod template."""
    for manifest in objects:
        if manifest.kind in ("Deployment", "Job"):
            yield manifest, manifest.body["spec"]["template"]


def reachable_from_outside(objects: list[Manifest], labels: Mapping[str, str], ports: set[int]) -> set[int]:
    """Which of a pod's `ports` a client outside the namespace's agentrunner pods may reach,
    under the NetworkPolicies of `objects` (ingress is open when none selects the pod)."""
    policies = [
        m.body["spec"]
        for m in objects
        if m.kind == "NetworkPolicy"
        and "Ingress" in m.body["spec"].get("policyTypes", ["Ingress"])
        and _matches(m.body["spec"]["podSelector"], labels)
    ]
    if not policies:
        return set(ports)
    open_ports: set[int] = set()
    for policy in policies:
        for rule in policy.get("ingress") or []:
            # A rule with `from` names its peers: pods of this namespace by label are insiders;
            # a namespaceSelector or an ipBlock lets outsiders in.
            peers = rule.get("from")
            if peers and all(set(peer) == {"podSelector"} for peer in peers):
                continue
            allowed = {int(port["port"]) for port in rule.get("ports") or []}
            open_ports |= allowed if allowed else set(ports)
    return open_ports & ports
