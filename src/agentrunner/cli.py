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
from rich.markup import escape
from rich.table import Table

from agentrunner.adapters.config.files import load_agent_directory
from agentrunner.domain.errors import AgentRunnerError, ConfigError
from agentrunner.settings import Role, Settings

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
        list[str],
        typer.Argument(
            help="Roles: state, config, orchestrator, scheduler, slack, autonomous, continuous, collaborative."
        ),
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
    """Migrate the database, start every role as its own process, restart one that exits, stop all on Ctrl-C."""
    from agentrunner import cluster  # noqa: PLC0415
    from agentrunner.adapters.state.urls import run_schema_command  # noqa: PLC0415

    settings = _settings()
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

    path = supervisor.state_file(_settings().data_dir)
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


def _client(url: str | None, role: Role = "orchestrator") -> httpx.Client:
    """A client of `role`'s API: `url`, else that role's port on this host; with the API key
    in AGENTRUNNER_API_KEY when the platform requires one."""
    import httpx  # noqa: PLC0415 - only the commands that call a running node pay for it

    base = url or f"http://127.0.0.1:{_settings().port_of(role)}"
    key = os.environ.get("AGENTRUNNER_API_KEY")
    # The header says "not a browser form" to a platform running with auth off.
    headers = {"X-AgentRunner-Client": "cli", **({"X-API-Key": key} if key else {})}
    return httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(10.0, read=None))


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


_STATUS_COLOURS = {"available": "green", "degraded": "yellow"}


@app.command()
def agents(
    name: Annotated[str | None, typer.Argument(help="One agent: its whole status, reasons and tools.")] = None,
    url: UrlOption = None,
) -> None:
    """List the agents of the running platform, each with a one-line reason; with NAME,
    show that agent in full."""
    if name is not None:
        _agent(name, url)
        return
    with _client(url) as client:
        listed = _call(client, "GET", "/agents").json()
    table = Table(title=f"{len(listed)} agents")
    for column in ("name", "mode", "provider", "model", "status", "reason"):
        table.add_column(column, overflow="fold")
    for agent in listed:
        llm = agent.get("llm") or {}
        status = agent["status"]
        colour = _STATUS_COLOURS.get(status, "red")
        table.add_row(
            agent["name"],
            agent.get("execution_mode") or "-",
            llm.get("provider", "-"),
            llm.get("model", "-"),
            f"[{colour}]{status}[/{colour}]",
            escape(agent.get("short_reason") or ""),
        )
    out.print(table)
    if any(agent.get("reasons") for agent in listed):
        out.print("The whole reasons of one agent: agentrunner agents NAME")


def _repeatable(agent: dict[str, Any]) -> str:
    """The offered tools whose calls may be made again after a crash (per_call: some)."""
    said = agent.get("offered_tools_repeatable") or {}
    names = [
        f"{name} (some calls)" if said.get(name) == "per_call" else name
        for name in agent.get("offered_tools") or []
        if said.get(name) in ("always", "per_call")
    ]
    return ", ".join(names) or "none"


def _agent(name: str, url: str | None) -> None:
    """`agentrunner agents NAME`: one agent with every reason in full."""
    with _client(url) as client:
        agent = _call(client, "GET", f"/agents/{name}").json()
    colour = _STATUS_COLOURS.get(agent["status"], "red")
    llm = agent.get("llm") or {}
    table = Table(show_header=False, title=f"agent {name}")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for field, value in (
        ("status", f"[{colour}]{agent['status']}[/{colour}]"),
        ("mode", agent.get("execution_mode") or "-"),
        ("provider / model", f"{llm.get('provider', '-')} / {llm.get('model', '-')}"),
        ("file", agent.get("source") or "-"),
        ("description", agent.get("description") or "-"),
        ("triggers", ", ".join(agent.get("event_subscriptions") or []) or "-"),
        ("tools offered", ", ".join(agent.get("offered_tools") or []) or "-"),
        ("repeatable after a crash", _repeatable(agent)),
    ):
        table.add_row(field, value if field == "status" else escape(value))
    # Reasons and warnings quote files and servers: printed as text, never as markup.
    for index, reason in enumerate(agent.get("reasons") or [], start=1):
        table.add_row(f"reason {index}", escape(reason))
    for warning in agent.get("warnings") or []:
        table.add_row("warning", escape(warning))
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
    with _client(url) as client, err.status(f"{name} is working on it (up to {wait:g} s)..."):
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


RoleUrl = Annotated[str | None, typer.Option("--url", help="The role's URL (default: its port on this host).")]


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


@app.command()
def runs(
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent's executions.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only this status (queued, running, ...).")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many, newest first.")] = 20,
    url: UrlOption = None,
) -> None:
    """List executions, newest first."""
    params: dict[str, Any] = {
        "limit": limit,
        **({"agent": agent} if agent else {}),
        **({"status": status} if status else {}),
    }
    with _client(url) as client:
        page = _call(client, "GET", "/executions", params=params).json()
    table = Table(title=f"{len(page['items'])} executions" + (" (more: --limit)" if page.get("next_cursor") else ""))
    for column in ("id", "agent", "status", "attempts", "created", "tokens in/out", "cost"):
        table.add_column(column, overflow="fold")
    for run in page["items"]:
        usage = run.get("usage") or {}
        colour = {"succeeded": "green", "failed": "red", "timed_out": "red"}.get(run["status"], "yellow")
        table.add_row(
            run["execution_id"],
            run["agent"],
            f"[{colour}]{run['status']}[/{colour}]",
            str(run.get("attempts", 0)),
            run["created_at"][:19].replace("T", " "),
            f"{usage.get('input_tokens', 0)}/{usage.get('output_tokens', 0)}",
            _money(run.get("cost_usd")),
        )
    out.print(table)


@app.command()
def run(
    execution_id: Annotated[str, typer.Argument(help="The execution id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole record as JSON.")] = False,
    url: UrlOption = None,
) -> None:
    """Show one execution: input, output or error, usage, cost, trace id."""
    with _client(url) as client:
        record = _call(client, "GET", f"/executions/{execution_id}").json()
    if as_json:
        sys.stdout.write(json.dumps(record, indent=2) + os.linesep)
        return
    table = Table(show_header=False, title=f"execution {execution_id}")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    error = record.get("error") or {}
    usage = record.get("usage") or {}
    for field, value in (
        ("agent", record["agent"]),
        ("status", record["status"]),
        ("attempts", str(record.get("attempts", 0))),
        ("input", json.dumps(record.get("input", {}))),
        ("output", record.get("output") or "-"),
        ("error", f"{error.get('code')}: {error.get('message')}" if error else "-"),
        ("provider / model", f"{record.get('provider') or '-'} / {record.get('model') or '-'}"),
        ("tokens in / out", f"{usage.get('input_tokens', 0)} / {usage.get('output_tokens', 0)}"),
        ("cost", _money(record.get("cost_usd"))),
        ("trace id", record["trace_id"]),
        ("created / finished", f"{record['created_at']} / {record.get('finished_at') or '-'}"),
    ):
        table.add_row(field, value)
    out.print(table)


@app.command()
def schedules(url: RoleUrl = None) -> None:
    """List schedules with their next fire time."""
    with _client(url, "scheduler") as client:
        listed = _call(client, "GET", "/schedules").json()
    table = Table(title=f"{len(listed)} schedules")
    for column in ("id", "agent", "when", "next fire (UTC)", "paused", "source"):
        table.add_column(column, overflow="fold")
    for view in listed:
        schedule = view["schedule"]
        when = schedule.get("cron") or f"every {schedule.get('interval_seconds'):g} s"
        table.add_row(
            schedule["id"],
            schedule["agent"],
            f"{when} ({schedule.get('timezone', 'UTC')})",
            (view.get("next_fire_at") or "-")[:19].replace("T", " "),
            "yes" if schedule.get("paused") else "no",
            schedule.get("source", "-"),
        )
    out.print(table)


@app.command()
def usage(
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601 start (UTC without a zone).")] = None,
    url: RoleUrl = None,
) -> None:
    """Tokens and cost per agent."""
    params = {**({"agent": agent} if agent else {}), **({"since": since} if since else {})}
    with _client(url, "state") as client:
        totals = _call(client, "GET", "/usage", params=params).json()
    table = Table(title="usage" + (f" since {since}" if since else ""))
    for column in ("agent", "executions", "tokens in", "tokens out", "cost"):
        table.add_column(column)
    for row in [*totals["agents"], {**totals, "agent": "[bold]all[/bold]"}]:
        table.add_row(
            row["agent"],
            str(row["executions"]),
            str(row["input_tokens"]),
            str(row["output_tokens"]),
            _money(row["cost_usd"]),
        )
    out.print(table)


dlq_app = typer.Typer(help="Dead letters: events that failed every delivery.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
def dlq_list(
    include_replayed: Annotated[bool, typer.Option("--all", help="Replayed ones too.")] = False,
    url: UrlOption = None,
) -> None:
    """List dead letters, newest first."""
    with _client(url) as client:
        letters = _call(client, "GET", "/dead-letters", params={"include_replayed": include_replayed}).json()
    table = Table(title=f"{len(letters)} dead letters")
    for column in ("id", "queue", "topic", "attempts", "error", "when"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        table.add_row(
            letter["id"],
            letter["queue"],
            letter["topic"],
            str(letter["attempts"]),
            letter["error"],
            letter["created_at"][:19].replace("T", " "),
        )
    out.print(table)


@dlq_app.command("replay")
def dlq_replay(letter_id: Annotated[str, typer.Argument(help="The dead letter's id.")], url: UrlOption = None) -> None:
    """Deliver a dead letter's event again to its queue, from attempt 1."""
    with _client(url) as client:
        letter = _call(client, "POST", f"/dead-letters/{letter_id}/replay").json()
    out.print(f"replayed {letter['id']} into {letter['queue']}")


@dlq_app.command("delete")
def dlq_delete(letter_id: Annotated[str, typer.Argument(help="The dead letter's id.")], url: UrlOption = None) -> None:
    """Forget a dead letter that will not be replayed."""
    with _client(url) as client:
        _call(client, "DELETE", f"/dead-letters/{letter_id}")
    out.print(f"deleted {letter_id}")


def main() -> None:
    """Console-script entry point."""
    app()
