"""What every `agentrunner` command shares: the Typer app, the consoles, the settings, and
the HTTP client of a running node's API."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from agentrunner.domain.roles import HttpRole
from agentrunner.settings import Settings

if TYPE_CHECKING:
    import httpx

    from agentrunner.client import Client

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


def client_of(url: str | None, role: HttpRole = "orchestrator") -> Client:
    """A client of `role`'s API (`agentrunner.client`): `url`, else that role's port on this
    host; with the API key in AGENTRUNNER_API_KEY when the platform requires one. A command
    does not retry a node that does not answer: it says so at once (`call`)."""
    from agentrunner.client import Client  # noqa: PLC0415 - only the commands that call a running node pay for it

    base = url or f"http://127.0.0.1:{settings_or_exit().port_of(role)}"
    return Client(base, timeout=10.0, retry_seconds=0.0)


@contextmanager
def reported() -> Iterator[None]:
    """Run a client's call: an error answer printed as `code: message`, a node that does
    not answer as such, both exit 1."""
    from agentrunner.client import APIError, ConnectionFailedError  # noqa: PLC0415

    try:
        yield
    except ConnectionFailedError as exc:
        err.print(f"[red]no agentrunner answers at {exc.url}[/red] ({exc.reason}): start it with `agentrunner up`")
        raise typer.Exit(1) from exc
    except APIError as exc:
        if exc.from_api:
            err.print(f"[red]{exc.code}[/red]: {exc.message}")
        else:
            err.print(f"[red]HTTP {exc.status}[/red]: {exc.message}")
        raise typer.Exit(1) from exc


def call(client: Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """`client.request`, its errors `reported`."""
    with reported():
        return client.request(method, path, **kwargs)
