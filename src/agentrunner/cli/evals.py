"""`agentrunner eval [NAME...]`: run eval suites on a running platform (POST /evals/runs),
follow them, print a table per suite, write JSON and JUnit XML, and exit non-zero when a
suite falls below its threshold (or, with `--fail-on-regression`, a case regressed)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from agentrunner.adapters.config.evals import EvalFiles
from agentrunner.cli.common import UrlOption, app, call, client_of, err, out
from agentrunner.cli.eval_reports import junit_xml, why_failed
from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.errors import AgentRunnerError
from agentrunner.domain.eval_suite import judge_problem

if TYPE_CHECKING:
    from agentrunner.client import Client

POLL_SECONDS = 0.5


@app.command("eval")
def eval_suites(
    names: Annotated[
        list[str] | None, typer.Argument(metavar="[NAME]...", help="Suites to run (`evals/<NAME>.yml`); none: all.")
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=16, help="Cases run at once.")] = 4,
    baseline: Annotated[
        str | None,
        typer.Option("--baseline", help="Compare with a run id, or a version of the agent (the newest run on it)."),
    ] = None,
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the runs as JSON.")] = Path(
        "eval-results.json"
    ),
    junit_path: Annotated[Path, typer.Option("--junit", help="Where to write the runs as JUnit XML.")] = Path(
        "eval-results.xml"
    ),
    fail_on_regression: Annotated[
        bool, typer.Option("--fail-on-regression", help="Exit 1 when a case passed in the baseline fails now.")
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the runs to end.")] = 3600.0,
    url: UrlOption = None,
) -> None:
    """Run eval suites through the platform: a table per suite (case, result, score, cost,
    latency), JSON and JUnit XML files, exit 1 below a suite's threshold."""
    with client_of(url) as client:
        suites = names or call(client, "GET", "/evals").json()["suites"]
        if not suites:
            err.print("no eval suites: write evals/<name>.yml beside the agents (or set EVALS_DIR)")
            raise typer.Exit(2)
        started = [
            call(
                client,
                "POST",
                "/evals/runs",
                json={"suite": name, "concurrency": concurrency, **({"baseline": baseline} if baseline else {})},
            ).json()
            for name in suites
        ]
        runs = _follow(client, [run["run_id"] for run in started], timeout)
    json_path.write_text(json.dumps({"runs": runs}, indent=2) + "\n", encoding="utf-8")
    junit_path.write_text(junit_xml(runs), encoding="utf-8")
    for run in runs:
        _print_run(run)
    out.print(f"wrote {escape(str(json_path))} and {escape(str(junit_path))}")
    below = [run["suite"] for run in runs if run["status"] != "passed"]
    regressed = [run["suite"] for run in runs if (run.get("comparison") or {}).get("regressed")]
    if below or (fail_on_regression and regressed):
        raise typer.Exit(1)


def _follow(client: Client, run_ids: list[str], timeout: float) -> list[dict[str, Any]]:
    """Each run once it has ended, its progress on stderr meanwhile."""
    deadline = time.monotonic() + timeout
    ended: dict[str, dict[str, Any]] = {}
    shown: dict[str, int] = {}
    while len(ended) < len(run_ids):
        for run_id in run_ids:
            if run_id in ended:
                continue
            run = call(client, "GET", f"/evals/runs/{run_id}").json()
            done = len(run["cases"])
            if shown.get(run_id) != done:
                shown[run_id] = done
                err.print(f"{escape(run['suite'])}: {done}/{run['total_cases']} cases, {run['passed_cases']} passed")
            if run["status"] != "running":
                ended[run_id] = run
        if len(ended) < len(run_ids):
            if time.monotonic() > deadline:
                err.print(f"[red]the runs did not end in {timeout:g} s[/red]: GET /evals/runs/ID shows them")
                raise typer.Exit(3)
            time.sleep(POLL_SECONDS)
    return [ended[run_id] for run_id in run_ids]


def _print_run(run: dict[str, Any]) -> None:
    table = Table(title=f"{escape(run['suite'])} on {escape(run['agent'])} v{run.get('agent_version') or '?'}")
    for column in ("case", "result", "score", "cost", "latency", "why"):
        table.add_column(column, overflow="fold")
    for case in run["cases"]:
        cost = case.get("cost_usd")
        latency = case.get("latency_ms")
        table.add_row(
            escape(case["case"]),
            "[green]pass[/green]" if case["passed"] else "[red]FAIL[/red]",
            f"{case['score']:.2f}",
            "-" if cost is None else f"${cost:.4f}",
            "-" if latency is None else f"{latency:.0f} ms",
            "" if case["passed"] else escape(why_failed(case)),
        )
    out.print(table)
    colour = "green" if run["status"] == "passed" else "red"
    out.print(
        f"[{colour}]{run['status']}[/{colour}]: {run['passed_cases']}/{run['total_cases']} cases passed"
        f" ({run['pass_rate']:.0%}, threshold {run['threshold']:.0%}), run {run['run_id']}"
    )
    if run.get("error"):
        err.print(f"[red]error[/red]: {escape(run['error'])}")
    comparison = run.get("comparison")
    if comparison:
        out.print(f"against {comparison['baseline_run_id']} (v{comparison.get('baseline_agent_version') or '?'}):")
        for change in comparison["regressed"]:
            out.print(f"  [red]regressed[/red] {escape(change['case'])}: passed before, fails now")
        for change in comparison["improved"]:
            out.print(f"  [green]improved[/green] {escape(change['case'])}: failed before, passes now")
        if not comparison["regressed"] and not comparison["improved"]:
            out.print("  no case changed")


def validate_evals(folder: Path, agents: dict[str, AgentConfig]) -> int:
    """`agentrunner validate`'s check of the eval files in `folder` against `agents` (the
    agent files that loaded): print each problem; return how many suites are broken."""
    files = EvalFiles(folder)
    broken = 0
    for name in files.names():
        try:
            suite = files.load(name)
        except AgentRunnerError as exc:
            err.print(f"[red]error[/red] {escape(exc.message)}")
            broken += 1
            continue
        problems = [] if suite.agent in agents else [f"agent {suite.agent!r} is not among the agent files"]
        for judge in sorted(suite.judges):
            config = agents.get(judge)
            problem = judge_problem(config) if config else f"judge agent {judge!r} is not among the agent files"
            problems += [problem] if problem else []
        for problem in problems:
            err.print(f"[red]error[/red] {escape(str(folder / name))}.yml: {escape(problem)}")
        broken += any(problems)
    if files.names():
        valid = len(files.names()) - broken
        colour = "red" if broken else "green"
        out.print(f"[{colour}]{valid} eval suites valid, {broken} invalid[/{colour}] in {escape(str(folder))}")
    return broken
