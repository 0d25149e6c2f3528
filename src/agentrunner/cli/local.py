"""Commands that run the platform on this machine or check its files: `up`, `serve`,
`cluster up|status`, `validate`, `db upgrade|downgrade|current`."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from agentrunner.adapters.config.files import load_agent_directory
from agentrunner.cli.collector import collector_paused, imports_frozen
from agentrunner.cli.common import app, err, out, settings_or_exit
from agentrunner.cli.evals import validate_evals
from agentrunner.domain.errors import AgentRunnerError, ConfigError
from agentrunner.domain.roles import ALL_ROLES


@app.command()
def up() -> None:
    """Start every role in this one process (embedded mode: SQLite, in-memory bus and cache)."""
    with collector_paused():  # until the node has started (`freeze_heap` turns it on)
        from agentrunner.logs import configure_logging  # noqa: PLC0415 - keep `validate` light
        from agentrunner.node import Node, run_on_loop, serve  # noqa: PLC0415

        imports_frozen()
        settings = settings_or_exit()
        configure_logging("agentrunner", settings.log_level)
        try:
            node = Node(settings)
            started = run_on_loop(settings.event_loop, partial(serve, node))
        except (ConfigError, OSError) as exc:
            err.print(f"[red]agentrunner cannot start:[/red] {exc}")
            raise typer.Exit(1) from exc
        if not started:
            raise typer.Exit(1)


@app.command()
def serve(
    roles: Annotated[
        list[str],
        typer.Argument(help=f"Roles: {', '.join(ALL_ROLES)}."),
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
    with collector_paused():  # until the node has started (`freeze_heap` turns it on)
        from agentrunner.logs import configure_logging  # noqa: PLC0415 - keep `validate` light
        from agentrunner.node import Node, run_on_loop  # noqa: PLC0415
        from agentrunner.node import serve as serve_node  # noqa: PLC0415

        imports_frozen()
        settings = settings_or_exit()
        configure_logging("+".join(roles), settings.log_level)
        try:
            node = Node(settings, roles=roles, slack_optional=slack_optional)
            started = run_on_loop(settings.event_loop, partial(serve_node, node, health_port=health_port))
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
    """Migrate the database, start every role as its own process, restart one that exits, stop all on Ctrl-C."""
    from agentrunner import cluster  # noqa: PLC0415
    from agentrunner.adapters.state.urls import run_schema_command  # noqa: PLC0415

    settings = settings_or_exit()
    try:
        run_schema_command(settings.effective_database_url, "upgrade", "head")
        raise typer.Exit(cluster.run(settings, autonomous))
    except AgentRunnerError as exc:
        err.print(f"[red]cluster up failed:[/red] {exc}")
        raise typer.Exit(1) from exc


@cluster_app.command("status")
def cluster_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the state file (with uptimes) as JSON.")] = False,
) -> None:
    """Each role of the cluster `cluster up` runs with this DATA_DIR: pid, state, restarts,
    last exit, uptime; exit 1 when no cluster runs."""
    import time  # noqa: PLC0415

    from agentrunner import supervisor  # noqa: PLC0415

    path = supervisor.state_file(settings_or_exit().data_dir)
    state = supervisor.read_state(path)
    if state is None:
        err.print(f"no cluster running (no state file at {path})")
        raise typer.Exit(1)
    if state["stopped"] or not supervisor.supervisor_alive(state["supervisor_pid"]):
        err.print(f"no cluster running (the supervisor, pid {state['supervisor_pid']}, that wrote {path} is gone)")
        raise typer.Exit(1)
    now = time.time()
    for role in state["roles"]:
        live = role["state"] in ("starting", "ready")
        role["uptime_seconds"] = round(now - role["started_at"], 1) if live else None
    if as_json:
        typer.echo(json.dumps(state))
        return
    table = Table(title=f"cluster (supervisor pid {state['supervisor_pid']}, {path})")
    for column in ("role", "pid", "state", "restarts", "last exit", "uptime"):
        table.add_column(column)
    for role in state["roles"]:
        uptime = role["uptime_seconds"]
        table.add_row(
            role["role"],
            str(role["pid"] or "-"),
            role["state"],
            str(role["restarts"]),
            role["last_exit"] or "-",
            "-" if uptime is None else f"{int(uptime) // 60}m{int(uptime) % 60:02d}s",
        )
    out.print(table)


@app.command()
def validate(
    directory: Annotated[Path | None, typer.Argument(help="Folder of agent YAML files (default AGENTS_DIR).")] = None,
) -> None:
    """Check agent files (and the eval files beside them): print a table of agents, or every
    error; exit 1 on errors."""
    folder = directory or settings_or_exit().agents_dir
    evals = folder.parent / "evals" if directory else settings_or_exit().evals_path
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
    # The eval files beside them, checked against the agents that loaded.
    broken_suites = validate_evals(evals, {document.config.name: document.config for document in loaded.documents})
    if broken or broken_suites:
        err.print(f"[red]{summary}[/red]")
        raise typer.Exit(1)
    out.print(f"[green]{summary}[/green]")


db_app = typer.Typer(help="Manage the database schema (Alembic migrations) of DATABASE_URL.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _alembic(action: str, revision: str) -> None:
    from agentrunner.adapters.state.urls import run_schema_command  # noqa: PLC0415 - only `db` needs Alembic

    try:
        run_schema_command(settings_or_exit().effective_database_url, action, revision)
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
