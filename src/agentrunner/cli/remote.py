"""Commands that talk to a running platform over its API: `agents`, `invoke`, `runs`,
`run`, `schedules`, `usage`, `dlq list|replay|delete` (AGENTRUNNER_URL, AGENTRUNNER_API_KEY)."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from agentrunner.cli.common import UrlOption, app, call, client_of, err, out, reported

_STATUS_COLOURS = {"available": "green", "degraded": "yellow"}


@app.command()
def agents(
    name: Annotated[str | None, typer.Argument(help="One agent: its whole status, reasons and tools.")] = None,
    of: Annotated[
        str | None, typer.Argument(metavar="[AGENT]", help="After `versions`: the agent whose versions to list.")
    ] = None,
    version: Annotated[int | None, typer.Argument(help="After `versions NAME`: one version, with its diff.")] = None,
    url: UrlOption = None,
) -> None:
    """List the agents of the running platform, each with a one-line reason; with NAME,
    show that agent in full; `agents versions NAME [V]`: its versions, or one with its diff."""
    if name == "versions" and of is not None:
        _versions(of, version, url)
        return
    if name is not None:
        _agent(name, url)
        return
    with client_of(url) as client, reported():
        listed = [agent.model_dump(mode="json") for agent in client.agents()]
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


def _versions(name: str, version: int | None, url: str | None) -> None:
    """`agentrunner agents versions NAME [V]`: the versions of an agent, newest first, each
    with the fields it changed; with V, that version's text and its diff to the previous."""
    with client_of(url) as client:
        if version is not None:
            shown = call(client, "GET", f"/agents/{name}/versions/{version}").json()
            out.print(
                f"[bold]{escape(name)} v{shown['version']}[/bold] {shown['created_at']} {shown['content_hash'][:12]}"
            )
            # The text and diff quote the agent's prompt: printed as text, never as markup.
            out.print(escape(shown["diff"] or shown["text"]), highlight=False)
            return
        listed = call(client, "GET", f"/agents/{name}/versions").json()
    table = Table(title=f"{len(listed)} versions of {escape(name)}")
    for column in ("version", "recorded", "hash", "changed"):
        table.add_column(column, overflow="fold")
    for entry in listed:
        changed = ", ".join(change["field"] for change in entry["changes"]) or "-"
        table.add_row(str(entry["version"]), entry["created_at"], entry["content_hash"][:12], escape(changed))
    out.print(table)
    out.print(f"One version with its diff: agentrunner agents versions {escape(name)} V")


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
    with client_of(url) as client, reported():
        agent = client.agent(name).model_dump(mode="json")
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
    # One request that the server holds up to `wait` (its 202 said as before), not the
    # client's own wait on the stream: an execution waiting for approval is still running here.
    with client_of(url) as client, err.status(f"{name} is working on it (up to {wait:g} s)..."):
        response = call(client, "POST", f"/agents/{name}/invoke", json=body, timeout=10.0 + wait)
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
    with client_of(url) as client, reported():
        page = client.list_executions_page(agent=agent or None, status=status or None, limit=limit).model_dump(
            mode="json"
        )
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
    with client_of(url) as client, reported():
        # As the API sent it: the fields it answered, no more (`webhook` only when there is one).
        record = client.get_execution(execution_id).model_dump(mode="json", exclude_unset=True)
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
    with client_of(url, "scheduler") as client:
        listed = call(client, "GET", "/schedules").json()
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
    with client_of(url, "state") as client:
        totals = call(client, "GET", "/usage", params=params).json()
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
    with client_of(url) as client:
        letters = call(client, "GET", "/dead-letters", params={"include_replayed": include_replayed}).json()
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
    with client_of(url) as client:
        letter = call(client, "POST", f"/dead-letters/{letter_id}/replay").json()
    out.print(f"replayed {letter['id']} into {letter['queue']}")


@dlq_app.command("delete")
def dlq_delete(letter_id: Annotated[str, typer.Argument(help="The dead letter's id.")], url: UrlOption = None) -> None:
    """Forget a dead letter that will not be replayed."""
    with client_of(url) as client:
        call(client, "DELETE", f"/dead-letters/{letter_id}")
    out.print(f"deleted {letter_id}")
