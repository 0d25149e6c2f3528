"""The chaos harness, shared by tests/chaos (the short form) and bench/chaos.py (the campaign).

`agentrunner cluster up --autonomous 2` runs on PostgreSQL, Redis and RabbitMQ instances of
its own (scripts/private_services.sh: never the shared ones the rest of the suite uses, since
a fault here stops them). `Load` sends invocations at a steady rate from clients that retry
with the same Idempotency-Key until accepted, as the docs tell users to. `run_fault` injects
one fault under that load and returns what it cost, measured on recorded facts only:

- every accepted execution's record, read from the database (terminal or not, how many
  records carry its prompt: more than one is a duplicate);
- the answers to each key (two execution ids for one key: executed twice);
- the `max_concurrency: 2` agent's peak, from the recorded start and finish of its runs;
- each failed attempt's time and status, against the window in which the fault may cost
  errors; the seconds until an invocation succeeds end to end again (recovery).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from agentrunner.domain.roles import HTTP_ROLES
from agentrunner.supervisor import is_ready
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.timed_calls import TimedCalls, peak
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
SERVICES_SCRIPT = REPO / "scripts" / "private_services.sh"
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}
LIMIT = 2  # max_concurrency of the `chaos-limited` agent
AGENTS = {
    "chaos-echo.yml": "name: chaos-echo\nagent_type: chaos\nexecution_mode: autonomous\n"
    "llm_config: {provider: echo, model: echo}\n",
    # Its model (the loopback OpenAI fake) answers after LIMITED_SECONDS: runs overlap, so
    # the limit is visible in the recorded start and finish times.
    "chaos-limited.yml": "name: chaos-limited\nagent_type: chaos\nexecution_mode: autonomous\n"
    f"llm_config: {{provider: openai, model: gpt-4o}}\nlimits: {{max_concurrency: {LIMIT}}}\n",
}
LIMITED_SECONDS = 0.2
BURST = 8  # invocations of the limited agent sent at once during each fault


# -- the private services ---------------------------------------------------------------


class PrivateServices:
    """PostgreSQL, Redis and RabbitMQ of this run only (scripts/private_services.sh)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _run(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run(
            ["bash", str(SERVICES_SCRIPT), args[0], str(self.directory), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"private_services.sh {' '.join(args)} failed: {done.stderr}{done.stdout}")
        return done.stdout

    def start(self, *services: str) -> dict[str, float]:
        """Start `services` (default: all three); the seconds each took."""
        took = {}
        for service in services or ("pg", "redis", "rabbitmq"):
            began = time.monotonic()
            self._run("start", service)
            took[service] = time.monotonic() - began
        return took

    def stop(self, service: str, how: str = "graceful") -> None:
        """Stop one: `graceful`, or `kill` (kill -9; PostgreSQL: immediate shutdown, a crash)."""
        self._run("stop", service, how)

    def urls(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self._run("urls").splitlines() if "=" in line)

    def down(self) -> None:
        self._run("down")


# -- the cluster --------------------------------------------------------------------------


def _children(root: int) -> dict[int, list[str]]:
    """Every live descendant of `root`: pid -> command line."""
    parents: dict[int, int] = {}
    commands: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            state, parent = stat.rsplit(")", 1)[1].split()[:2]
            if state == "Z":
                continue
            parents[int(entry.name)] = int(parent)
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().decode().split("\0")
    found: dict[int, list[str]] = {}
    frontier = [root]
    while frontier:
        ancestor = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == ancestor and pid not in found:
                found[pid] = commands[pid]
                frontier.append(pid)
    return found


@dataclass
class Role:
    """One role process the cluster runs right now."""

    name: str  # orchestrator, autonomous, continuous, collaborative, ...
    pid: int
    health_url: str


class Cluster:
    """`agentrunner cluster up --autonomous N` on the private services, with the chaos agents."""

    def __init__(self, workdir: Path, services: PrivateServices, *, autonomous: int = 2) -> None:
        self.workdir = workdir
        self.services = services
        self.autonomous = autonomous
        self.process: subprocess.Popen[bytes] | None = None
        self.ports = {role: free_port() for role in HTTP_ROLES}
        self.fake = FakeOpenAI(api_key="sk-chaos", reply="done")
        self.calls = TimedCalls(self.fake, LIMITED_SECONDS)  # only the limited agent calls the vendor
        self.starts = 0
        (workdir / "agents").mkdir(parents=True, exist_ok=True)
        for name, text in AGENTS.items():
            (workdir / "agents" / name).write_text(text)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['orchestrator']}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"cluster-{self.starts}.log"

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.endswith(("_API_KEY", "_BASE_URL", "_URL")) and not k.startswith(("AWS_", "SLACK_", "REDIS_"))
        }
        env.update({f"{role.upper()}_PORT": str(port) for role, port in self.ports.items()})
        env.update(self.services.urls())
        env.update(
            {
                "AGENTS_DIR": str(self.workdir / "agents"),
                "DATA_DIR": str(self.workdir / "data"),
                "OPENAI_API_KEY": self.fake.api_key,
                "OPENAI_BASE_URL": self.fake.base_url,
                "LOG_LEVEL": "WARNING",
                # A worker killed holding a slot of the limited agent frees it this fast.
                "SLOT_LEASE_SECONDS": "3",
            }
        )
        return env

    def start(self, timeout: float = 120) -> float:
        """Start the cluster and wait until it says every process is ready; the seconds it took."""
        if self.starts == 0:
            self.fake.__enter__()
        self.starts += 1
        began = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agentrunner", "cluster", "up", "--autonomous", str(self.autonomous)],
                cwd=self.workdir,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        while b"processes ready" not in self.log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() - began > timeout:
                raise RuntimeError(f"cluster did not start:\n{self.log_tail()}")
            time.sleep(0.2)
        return time.monotonic() - began

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ensure_up(self) -> None:
        """Start the cluster again if it exited (what `cluster up` did on a role's death
        before it supervised its roles), so the next fault starts from a serving cluster."""
        if not self.alive():
            self.start()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def roles(self) -> list[Role]:
        """The role processes running now (a restarted role has a new pid)."""
        if not self.alive():
            return []
        assert self.process is not None
        found = []
        for pid, command in _children(self.process.pid).items():
            if "serve" not in command:
                continue
            name = command[command.index("serve") + 1]
            if "--health-port" in command:
                port = int(command[command.index("--health-port") + 1])
            elif name in self.ports:
                port = self.ports[name]
            else:
                continue
            found.append(Role(name, pid, f"http://127.0.0.1:{port}"))
        return sorted(found, key=lambda role: (role.name, role.pid))

    def kill(self, name: str) -> Role:
        """kill -9 one process of role `name` (the first, for autonomous workers)."""
        role = next(role for role in self.roles() if role.name == name)
        os.kill(role.pid, signal.SIGKILL)
        return role

    def wait_replaced(self, killed: Role, timeout: float) -> float | None:
        """When (monotonic) a new process of the killed role answered ready; None if none did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            for role in self.roles():
                if role.health_url == killed.health_url and role.pid != killed.pid and is_ready(role.health_url):
                    return time.monotonic()
            time.sleep(0.1)
        return None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(45)
            except subprocess.TimeoutExpired:
                for pid in _children(self.process.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.process.kill()
                self.process.wait(10)
        if self.starts:
            self.fake.__exit__(None, None, None)


# -- the load -------------------------------------------------------------------------------


@dataclass
class Invocation:
    """One client request and its retries (same Idempotency-Key, same body)."""

    key: str
    agent: str
    prompt: str
    began: float
    failures: list[tuple[float, str]] = field(default_factory=list)  # (when, status or error)
    execution_ids: set[str] = field(default_factory=set)  # every id an answer named
    accepted_at: float | None = None


class Load:
    """Invocations at `rate` a second, a third to the limited agent; each retried with its
    key (backoff 0.1 s doubling to 1 s) until accepted or `give_up` seconds passed; one in
    four accepted ones is sent once more with its key, which must name the same execution."""

    def __init__(self, url: str, *, rate: float, label: str, give_up: float = 90.0) -> None:
        self.url = url
        self.rate = rate
        self.label = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")  # a key is printable ASCII, no spaces
        self.give_up = give_up
        self.invocations: list[Invocation] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max(8, int(rate * 4)))
        self._http = httpx.Client(base_url=url, timeout=10, limits=httpx.Limits(max_connections=64))
        self._thread = threading.Thread(target=self._send_at_rate, daemon=True)
        self.readiness: list[str] = []  # the orchestrator's /health/ready answers, 4 a second
        self._watch = threading.Thread(target=self._watch_readiness, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        self._watch.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sending new invocations; wait for every one in flight to be accepted or give up."""
        self._stop.set()
        self._thread.join()
        self._watch.join()
        self._pool.shutdown(wait=True)
        self._http.close()

    def accepted(self) -> int:
        return sum(1 for invocation in self.invocations if invocation.accepted_at is not None)

    def wait_accepted(self, count: int, timeout: float) -> None:
        """Until `count` invocations (in all) were accepted; no error when the time runs out:
        the report says what was not."""
        deadline = time.monotonic() + timeout
        while self.accepted() < count and time.monotonic() < deadline:
            time.sleep(0.1)

    def burst(self, count: int = BURST) -> None:
        """`count` invocations of the limited agent at once: more than its limit wants to run,
        so a limit that fails open during the fault shows in the recorded peak."""
        for number in range(count):
            self._submit(f"{self.label}-burst-{number}", "chaos-limited")

    def _submit(self, name: str, agent: str) -> None:
        key = f"{name}-{uuid.uuid4().hex[:8]}"
        invocation = Invocation(key, agent, f"chaos {key}", time.monotonic())
        self.invocations.append(invocation)
        self._pool.submit(self._invoke, invocation)

    def _watch_readiness(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self.readiness.append(str(self._http.get("/health/ready", timeout=2).status_code))
            except httpx.HTTPError as exc:
                self.readiness.append(type(exc).__name__)

    def _send_at_rate(self) -> None:
        interval, next_at, number = 1 / self.rate, time.monotonic(), 0
        while not self._stop.is_set():
            self._submit(f"{self.label}-{number}", "chaos-limited" if number % 3 == 0 else "chaos-echo")
            number += 1
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _post(self, invocation: Invocation) -> str | None:
        """One attempt: the execution id it was accepted with, or None (the failure recorded)."""
        try:
            answer = self._http.post(
                f"/agents/{invocation.agent}/invoke",
                json={"task_data": {"prompt": invocation.prompt}, "wait": 0},
                headers={"Idempotency-Key": invocation.key},
            )
        except httpx.HTTPError as exc:
            invocation.failures.append((time.monotonic(), type(exc).__name__))
            return None
        if answer.status_code in (200, 202):
            execution_id: str = answer.json()["execution_id"]
            invocation.execution_ids.add(execution_id)
            return execution_id
        code = ""
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            code = answer.json()["error"]["code"]
        invocation.failures.append((time.monotonic(), f"{answer.status_code} {code}".strip()))
        return None

    def _invoke(self, invocation: Invocation) -> None:
        delay = 0.1
        while self._post(invocation) is None:
            if time.monotonic() - invocation.began > self.give_up:
                return
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        invocation.accepted_at = time.monotonic()
        if random.random() < 0.25:
            self._post(invocation)


# -- faults and their report ---------------------------------------------------------------


@dataclass
class FaultReport:
    """What one fault cost (see the module docstring)."""

    fault: str
    accepted: int = 0
    never_accepted: int = 0
    succeeded: int = 0
    not_succeeded: dict[str, int] = field(default_factory=dict)  # terminal but not succeeded
    lost: int = 0  # accepted, not terminal (or not recorded) by the deadline
    duplicated: int = 0  # prompts recorded more than once, keys answered with two executions
    limit_peak: int = 0
    client_errors: int = 0  # failed attempts
    errors_outside_window: int = 0  # failed attempts outside the fault's allowed window
    error_kinds: dict[str, int] = field(default_factory=dict)
    readiness: dict[str, int] = field(default_factory=dict)  # the orchestrator's /health/ready answers
    recovery_seconds: float | None = None  # until an invocation succeeds end to end again
    role_back_seconds: float | None = None  # until the killed role's replacement is ready
    notes: list[str] = field(default_factory=list)


@dataclass
class Window:
    """When the fault may cost client errors (monotonic seconds), when it was over (the
    role killed, the service back), and the role it killed."""

    start: float
    end: float
    over: float
    replaced: Future[float | None] | None = None  # when the killed role's replacement was ready


Fault = Callable[[Cluster, Load], Window]
_watcher = ThreadPoolExecutor(2, thread_name_prefix="chaos-watch")  # waits for a killed role's replacement


def kill_role(name: str, *, errors_allowed: bool = False, back_timeout: float = 60) -> Fault:
    """kill -9 of one process of role `name`; errors allowed until its replacement is ready
    when `errors_allowed` (the orchestrator), else none at all."""

    def inject(cluster: Cluster, load: Load) -> Window:
        began = time.monotonic()
        killed = cluster.kill(name)
        load.burst()
        replaced = _watcher.submit(cluster.wait_replaced, killed, back_timeout)
        if not errors_allowed:
            return Window(began, began, began, replaced)
        back = replaced.result() or time.monotonic()
        return Window(began, back + 1.0, began, replaced)  # a second for connections to the new process

    return inject


def outage(service: str, seconds: float, how: str = "kill") -> Fault:
    """Stop a private service for `seconds` (a burst of the limited agent's invocations
    half-way), then start it again."""

    def inject(cluster: Cluster, load: Load) -> Window:
        began = time.monotonic()
        cluster.services.stop(service, how)
        time.sleep(seconds / 2)  # the outage's length is the fault itself
        load.burst()
        time.sleep(seconds / 2)
        cluster.services.start(service)
        back = time.monotonic()
        return Window(began, back + 2.0, back)  # two seconds for the roles to reconnect

    return inject


def restart(service: str, how: str = "kill") -> Fault:
    """Stop a private service (kill -9; PostgreSQL: an immediate shutdown) and start it at once."""
    return outage(service, 0.0, how)


def _probe(url: str, timeout: float) -> bool:
    """Whether an invocation of the echo agent succeeds end to end within `timeout`."""
    began = time.monotonic()
    with httpx.Client(base_url=url, timeout=15) as http:
        while time.monotonic() - began < timeout:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                answer = http.post(
                    "/agents/chaos-echo/invoke",
                    json={"task_data": {"prompt": "probe"}, "wait": 10},
                    headers={"Idempotency-Key": f"probe-{uuid.uuid4().hex}"},
                )
                if answer.status_code == 200 and answer.json().get("status") == "succeeded":
                    return True
            time.sleep(0.2)
    return False


async def _records(database_url: str, prompts: list[str]) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""), timeout=5)
    try:
        return await connection.fetch(
            "SELECT execution_id, agent, status, input->>'prompt' AS prompt, started_at, finished_at"
            " FROM executions WHERE input->>'prompt' = ANY($1::text[])",
            prompts,
        )
    finally:
        await connection.close()


def settled_records(database_url: str, prompts: list[str], timeout: float) -> list[asyncpg.Record]:
    """The executions recorded with `prompts`, once each prompt has a terminal one (or the
    timeout passed: the last read, a record that cannot be read counts as lost)."""
    deadline = time.monotonic() + timeout
    records: list[asyncpg.Record] = []
    while True:
        with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
            records = asyncio.run(_records(database_url, prompts))
        done = {record["prompt"] for record in records if record["status"] in TERMINAL}
        if len(done) == len(set(prompts)) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def run_fault(
    cluster: Cluster,
    name: str,
    fault: Fault,
    *,
    rate: float,
    before: float = 2.0,
    after: float = 3.0,
    settle_timeout: float = 90.0,
) -> FaultReport:
    """Load at `rate`; after `before` seconds' worth of accepted invocations, inject `fault`;
    once an invocation succeeds end to end again, `after` seconds' worth more; then stop the
    load, wait for every accepted execution to settle and report."""
    report = FaultReport(name)
    began = time.monotonic()
    database_url = cluster.services.urls()["DATABASE_URL"]
    with Load(cluster.url, rate=rate, label=name) as load:
        load.wait_accepted(int(rate * before), timeout=before * 2 + 30)
        window = fault(cluster, load)
        if _probe(cluster.url, timeout=90):
            report.recovery_seconds = time.monotonic() - window.over
        load.wait_accepted(load.accepted() + int(rate * after), timeout=after * 2 + 30)
    if window.replaced is not None:
        back = window.replaced.result()
        report.role_back_seconds = None if back is None else back - window.start
    accepted = [invocation for invocation in load.invocations if invocation.accepted_at is not None]
    report.accepted = len(accepted)
    report.never_accepted = len(load.invocations) - len(accepted)
    failures = [failure for invocation in load.invocations for failure in invocation.failures]
    report.client_errors = len(failures)
    report.error_kinds = dict(Counter(kind for _, kind in failures))
    report.readiness = dict(Counter(load.readiness))
    report.errors_outside_window = sum(1 for at, _ in failures if not window.start <= at <= window.end)
    records = settled_records(database_url, [invocation.prompt for invocation in accepted], settle_timeout)
    by_prompt = Counter(record["prompt"] for record in records)
    terminal = {record["prompt"]: record["status"] for record in records if record["status"] in TERMINAL}
    report.lost = sum(1 for invocation in accepted if invocation.prompt not in terminal)
    report.succeeded = sum(1 for status in terminal.values() if status == "succeeded")
    report.not_succeeded = dict(Counter(status for status in terminal.values() if status != "succeeded"))
    report.duplicated = sum(count - 1 for count in by_prompt.values() if count > 1) + sum(
        len(invocation.execution_ids) - 1 for invocation in accepted if len(invocation.execution_ids) > 1
    )
    # Measured at the vendor: a run cut off by a killed worker keeps its first start, so the
    # executions' spans overlap where their model calls never did (tests/fakes/timed_calls.py).
    report.limit_peak = peak(cluster.calls.since(began))
    if not cluster.alive():
        report.notes.append("the cluster exited")
    return report


TABLE_COLUMNS = (
    "fault",
    "accepted",
    "succeeded",
    "lost",
    "duplicated",
    "limit peak",
    "never accepted",
    "client errors",
    "outside window",
    "recovery s",
    "role back s",
)


def table(reports: list[FaultReport]) -> str:
    """The campaign's report as a Markdown table."""

    def cells(report: FaultReport) -> list[str]:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        return [
            report.fault,
            str(report.accepted),
            str(report.succeeded),
            str(report.lost),
            str(report.duplicated),
            f"{report.limit_peak}/{LIMIT}",
            str(report.never_accepted),
            str(report.client_errors),
            str(report.errors_outside_window),
            seconds(report.recovery_seconds),
            seconds(report.role_back_seconds),
        ]

    rows = [list(TABLE_COLUMNS), *(cells(report) for report in reports)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = [
        "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |" for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


@contextlib.contextmanager
def chaos_cluster(directory: Path, *, autonomous: int = 2) -> Iterator[Cluster]:
    """Private services and a cluster on them, stopped and deleted afterwards."""
    services = PrivateServices(directory / "services")
    try:
        services.start()
        cluster = Cluster(directory / "cluster", services, autonomous=autonomous)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
    finally:
        services.down()
