"""What every `agentrunner` command shares: the Typer app, the consoles, the settings, and
the HTTP client of a running node's API."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from agentrunner.domain.roles import HttpRole
from agentrunner.settings import Settings

if TYPE_CHECKING:
    import httpx

app = typer.Typer(
    name="agentrunner", help="Run LLM agents defined in YAML files.", no_args_is_help=True, add_completion=False
)
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", envvar="AGENTRUNNER_URL", help="Orchestrator URL (default http://127.0.0.1:ORCHESTRATOR_PORT)."
    ),
]


def settings_or_exit() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        err.print(f"[red]invalid settings[/red] (environment or .env):\n{exc}")
        raise typer.Exit(2) from exc


def client_of(url: str | None, role: HttpRole = "orchestrator") -> httpx.Client:
    """A client of `role`'s API: `url`, else that role's port on this host; with the API key
    in AGENTRUNNER_API_KEY when the platform requires one."""
    import httpx  # noqa: PLC0415 - only the commands that call a running node pay for it

    base = url or f"http://127.0.0.1:{settings_or_exit().port_of(role)}"
    key = os.environ.get("AGENTRUNNER_API_KEY")
    # The header says "not a browser form" to a platform running with auth off.
    headers = {"X-AgentRunner-Client": "cli", **({"X-API-Key": key} if key else {})}
    return httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(10.0, read=None))


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    import httpx  # noqa: PLC0415

    try:
        response = client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        err.print(f"[red]no agentrunner answers at {client.base_url}[/red] ({exc}): start it with `agentrunner up`")
        raise typer.Exit(1) from exc
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            err.print(f"[red]{error['code']}[/red]: {error['message']}")
        except (ValueError, KeyError, TypeError):
            err.print(f"[red]HTTP {response.status_code}[/red]: {response.text}")
        raise typer.Exit(1)
    return response
