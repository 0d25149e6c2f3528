"""docker-compose.yml read as Docker Compose reads it (there is no engine here): `${VAR}`
references interpolated from an environment (`.env`), and published ports parsed into the
address, host port and container port they open."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from tests.conftest import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; $$ is a literal $.
_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class MissingVariableError(Exception):
    """A `${NAME:?message}` whose variable is unset or empty: compose refuses to start."""


def required_variables(text: str) -> set[str]:
    """Names compose refuses to start without (`${NAME:?...}` / `${NAME?...}`)."""
    return {match[1] for match in _REFERENCE.finditer(text) if match[2] in (":?", "?")}


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """`value` with its references replaced as Compose replaces them from `env`."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, operator, argument = match[1], match[2], match[3] or ""
        current = env.get(name)
        unset = current is None or (operator is not None and operator.startswith(":") and current == "")
        if not unset:
            return str(current)
        if operator in (":?", "?"):
            raise MissingVariableError(f"{name}: {argument}")
        if operator in (":-", "-"):
            return argument
        return ""

    return _REFERENCE.sub(replace, value)


def _interpolated(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolated(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(item, env) for key, item in node.items()}
    return node


def raw_services() -> dict[str, Any]:
    """The services as written (references not interpolated; YAML merge keys applied)."""
    services: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return services


def services(env: Mapping[str, str]) -> dict[str, Any]:
    """The services as Compose runs them with `env` (raises `MissingVariableError`)."""
    interpolated: dict[str, Any] = _interpolated(raw_services(), env)
    return interpolated


@dataclass(frozen=True)
class PublishedPort:
    """A port the host opens: on `address` (0.0.0.0 = every interface), `host_port` to `target`."""

    address: str
    host_port: str
    target: str


def published_ports(service: Mapping[str, Any]) -> list[PublishedPort]:
    """Every port `service` publishes, short syntax ("[ip:][host:]container") or long."""
    found: list[PublishedPort] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            target = str(entry["target"])
            found.append(PublishedPort(str(entry.get("host_ip") or "0.0.0.0"), str(entry.get("published", "")), target))
            continue
        spec = str(entry).split("/", 1)[0]
        if spec.startswith("["):  # [::1]:8001:8001
            address, _, rest = spec[1:].partition("]:")
            host_port, _, target = rest.rpartition(":")
            found.append(PublishedPort(address, host_port, target))
            continue
        parts = spec.split(":")
        if len(parts) == 3:
            found.append(PublishedPort(parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            found.append(PublishedPort("0.0.0.0", parts[0], parts[1]))
        else:
            found.append(PublishedPort("0.0.0.0", "", parts[0]))  # a random host port, every interface
    return found
