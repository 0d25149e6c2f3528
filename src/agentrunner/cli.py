"""The `agentrunner` command: start the platform, check agent files, talk to a running node."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from agentrunner.adapters.config.files import load_agent_directory
from agentrunner.domain.errors import AgentRunnerError, ConfigError
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


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        err.print(f"[red]invalid settings[/red] (environment or .env):\n{exc}")
        raise typer.Exit(2) from exc


@app.command()
def up() -> None:
    """Start every role in this one process (embedded mode: SQLite, in-memory bus and cache)."""
    from agentrunner.logs import configure_logging  # noqa: PLC0415 - keep `validate` light
    from agentrunner.node import Node, serve  # noqa: PLC0415

    settings = _settings()
    configure_logging("agentrunner", settings.log_level)
    try:
        node = Node(settings)
        started = asyncio.run(serve(node))
    except (ConfigError, OSError) as exc:
        err.print(f"[red]agentrunner cannot start:[/red] {exc}")
        raise typer.Exit(1) from exc
    if not started:
        raise typer.Exit(1)


@app.command()
def serve(
    roles: Annotated[
        list[str], typer.Argument(help="Roles: state, config, orchestrator, scheduler, slack, autonomous, continuous.")
    ],
    health_port: Annotated[
        int, typer.Option("--health-port", help="Port of /health/* for a worker-only process (0: any free port).")
    ] = 0,
    slack_optional: Annotated[
        bool,
        typer.Option(
            "--slack-optional",
            help="Without SLACK_SIGNING_SECRET, serve the slack role with its gateway off, not refuse to start.",
        ),
    ] = False,
) -> None:
    """Run some roles in this process (distributed mode: RabbitMQ between processes)."""
    from agentrunner.logs import configure_logging  # noqa: PLC0415 - keep `validate` light
    from agentrunner.node import Node  # noqa: PLC0415
    from agentrunner.node import serve as serve_node  # noqa: PLC0415

    settings = _settings()
    configure_logging("+".join(roles), settings.log_level)
    try:
        started = asyncio.run(
            serve_node(Node(settings, roles=roles, slack_optional=slack_optional), health_port=health_port)
        )
    except (ConfigError, OSError) as exc:
        err.print(f"[red]agentrunner cannot start {' '.join(roles)}:[/red] {exc}")
        raise typer.Exit(1) from exc
    if not started:
        raise typer.Exit(1)


cluster_app = typer.Typer(help="Every role as a local process (where Docker is absent).", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("up")
def cluster_up(
    autonomous: Annotated[int, typer.Option("--autonomous", min=0, help="Autonomous pool processes.")] = 1,
) -> None:
    """Migrate the database, start every role as its own process, stop them all on Ctrl-C."""
    from agentrunner import cluster  # noqa: PLC0415
    from agentrunner.adapters.state.urls import run_schema_command  # noqa: PLC0415

    settings = _settings()
    try:
        run_schema_command(settings.effective_database_url, "upgrade", "head")
        raise typer.Exit(cluster.run(settings, autonomous))
    except AgentRunnerError as exc:
        err.print(f"[red]cluster up failed:[/red] {exc}")
        raise typer.Exit(1) from exc


@app.command()
def validate(
    directory: Annotated[Path | None, typer.Argument(help="Folder of agent YAML files (default AGENTS_DIR).")] = None,
) -> None:
    """Check agent files: print a table of agents, or every error; exit 1 on errors."""
    folder = directory or _settings().agents_dir
    loaded = load_agent_directory(folder)
    table = Table(title=f"agents in {folder}")
    for column in ("name", "mode", "provider", "model", "file"):
        table.add_column(column)
    for document in loaded.documents:
        config = document.config
        llm = config.llm_config
        table.add_row(
            config.name, config.execution_mode.value, llm.provider.value, llm.model, Path(document.source).name
        )
    if loaded.documents:
        out.print(table)
    for document in loaded.documents:
        for warning in document.warnings:
            err.print(f"[yellow]warning[/yellow] {warning}")
    for issue in loaded.issues:
        err.print(f"[red]error[/red] {issue}")
    valid, broken = len(loaded.documents), len(loaded.broken)
    summary = f"{valid} valid, {broken} invalid"
    if broken:
        err.print(f"[red]{summary}[/red]")
        raise typer.Exit(1)
    out.print(f"[green]{summary}[/green]")


db_app = typer.Typer(help="Manage the database schema (Alembic migrations) of DATABASE_URL.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _alembic(action: str, revision: str) -> None:
    from agentrunner.adapters.state.urls import run_schema_command  # noqa: PLC0415 - only `db` needs Alembic

    try:
        run_schema_command(_settings().effective_database_url, action, revision)
    except AgentRunnerError as exc:
        err.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from exc


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    _alembic("upgrade", revision)
    out.print(f"database at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base.")]) -> None:
    """Undo migrations down to REVISION."""
    _alembic("downgrade", revision)
    out.print(f"database at {revision}")


@db_app.command("current")
def db_current() -> None:
    """Print the revision the database is at."""
    _alembic("current", "head")


def _client(url: str | None) -> httpx.Client:
    import httpx  # noqa: PLC0415 - only the commands that call a running node pay for it

    base = url or f"http://127.0.0.1:{_settings().orchestrator_port}"
    return httpx.Client(base_url=base, timeout=httpx.Timeout(10.0, read=None))


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
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


@app.command()
def agents(url: UrlOption = None) -> None:
    """List the agents of the running platform."""
    with _client(url) as client:
        listed = _call(client, "GET", "/agents").json()
    table = Table(title=f"{len(listed)} agents")
    for column in ("name", "mode", "provider", "model", "status", "reason"):
        table.add_column(column, overflow="fold")
    for agent in listed:
        llm = agent.get("llm") or {}
        status = agent["status"]
        colour = "green" if status == "available" else "yellow"
        table.add_row(
            agent["name"],
            agent.get("execution_mode") or "-",
            llm.get("provider", "-"),
            llm.get("model", "-"),
            f"[{colour}]{status}[/{colour}]",
            "; ".join(agent.get("reasons", [])),
        )
    out.print(table)


@app.command()
def invoke(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    prompt: Annotated[str, typer.Argument(help="What to ask; sent as task_data.prompt.")],
    session: Annotated[str | None, typer.Option("--session", help="Session id (continuous agents).")] = None,
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for the result.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole execution record as JSON.")] = False,
    url: UrlOption = None,
) -> None:
    """Run an agent on a prompt and print its answer."""
    body: dict[str, Any] = {"task_data": {"prompt": prompt}, "wait": wait}
    if session:
        body["session_id"] = session
    with _client(url) as client:
        response = _call(client, "POST", f"/agents/{name}/invoke", json=body)
    record = response.json()
    if as_json:
        sys.stdout.write(json.dumps(record, indent=2) + os.linesep)
        return
    if response.status_code == 202:
        err.print(f"still {record['status']} after {wait:g} s: GET /executions/{record['execution_id']}")
        raise typer.Exit(3)
    if record["status"] != "succeeded":
        error = record.get("error") or {}
        err.print(f"[red]{record['status']}[/red]: {error.get('message', '')}")
        raise typer.Exit(1)
    sys.stdout.write((record.get("output") or "") + os.linesep)


def main() -> None:
    """Console-script entry point."""
    app()
