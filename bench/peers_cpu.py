"""CPU accounting of bench/peers.py, from /proc: the CPU time (user + system) of every
process of a kind, and how busy the rest of the machine is.

A kind is a function that lists its pids when called: a process group this bench started
(a server and the children it forked), or a shared service found by its command name. Its
CPU over a phase is the sum, over the pids alive at the end, of their time at the end less
their time at the start (0 for a pid born during the phase); a pid that exits during the
phase loses its share, which the services and servers here (long-lived processes and
pooled connections) do not do.

PostgreSQL is shared with every other user of the machine: its client backends connected to
another database than the ones a system uses are left out (their command line names their
database); the postmaster and its background processes (writer, checkpointer, WAL writer,
autovacuum) count in full. RabbitMQ (beam.smp and its helpers) and Redis are one process
each, so their count holds whatever else uses them at the time: the idle check says when
something does.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")
RABBITMQ = frozenset({"beam.smp", "erl_child_setup", "epmd", "inet_gethost"})
REDIS = frozenset({"redis-server"})
# Busier than this (cores, other processes) during the idle check is a warning.
IDLE_LIMIT = 0.1

Kind = Callable[[], set[int]]


@dataclass(frozen=True)
class Stat:
    pid: int
    command: str
    group: int
    cpu: float  # seconds


def _stat(pid: int) -> Stat | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None  # gone meanwhile
    command = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): process group is field 5, utime and stime fields 14-15.
    return Stat(pid, command, int(fields[2]), (int(fields[11]) + int(fields[12])) / TICKS)


def _all() -> Iterator[Stat]:
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                yield stat


def group(leader: int) -> Kind:
    """The process group `leader` heads (each process this bench starts has its own)."""
    return lambda: {s.pid for s in _all() if s.group == leader}


def named(commands: frozenset[str]) -> Kind:
    return lambda: {s.pid for s in _all() if s.command in commands}


def backend_database(title: str) -> str | None:
    """The database a PostgreSQL process title names for a client backend ("postgres:
    15/main: user db host(port) state"), None for the postmaster and the background
    processes ("postgres: 15/main: checkpointer")."""
    words = title.split(": ", 2)[-1].split()
    if len(words) >= 3 and ("(" in words[2] or words[2] == "[local]"):
        return words[1]
    return None


def _backend_database(pid: int) -> str | None:
    try:
        title = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return backend_database(title)


def postgres(databases: set[str]) -> Kind:
    """PostgreSQL's processes but the client backends of other databases."""

    def pids() -> set[int]:
        found = set()
        for s in _all():
            if s.command == "postgres" or s.command.startswith("postgres:"):
                database = _backend_database(s.pid)
                if database is None or database in databases:
                    found.add(s.pid)
        return found

    return pids


def rabbitmq() -> Kind:
    return named(RABBITMQ)


def redis() -> Kind:
    return named(REDIS)


Sample = dict[str, dict[int, float]]


def sample(kinds: dict[str, Kind]) -> Sample:
    """Each kind's pids with their CPU seconds so far."""
    taken: Sample = {}
    for name, kind in kinds.items():
        times = {}
        for pid in kind():
            stat = _stat(pid)
            if stat is not None:
                times[pid] = stat.cpu
        taken[name] = times
    return taken


def spent(before: Sample, after: Sample) -> dict[str, float]:
    """CPU seconds of each kind between two samples."""
    return {
        name: sum(max(0.0, cpu - before.get(name, {}).get(pid, 0.0)) for pid, cpu in times.items())
        for name, times in after.items()
    }


def _machine() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine so far (all cores)."""
    words = (PROC / "stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(w) for w in words[:8]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / TICKS, sum(ticks) / TICKS


@dataclass(frozen=True)
class Idleness:
    other_cores: float  # cores the rest of the machine kept busy during the check
    loadavg: str
    # Cores each shared service (PostgreSQL, RabbitMQ, Redis) used during the check, while
    # the system measured was idle: what other users and the service's own timers cost.
    shared_cores: dict[str, float] = field(default_factory=dict)

    @property
    def idle(self) -> bool:
        return self.other_cores <= IDLE_LIMIT

    def describe(self) -> str:
        state = "idle" if self.idle else "NOT idle"
        return f"machine {state}: {self.other_cores:.2f} cores busy outside this run, loadavg {self.loadavg}"


async def idleness(started: dict[str, Kind], shared: dict[str, Kind] | None = None, seconds: float = 1.0) -> Idleness:
    """How busy the machine is over `seconds`, less the processes of `started` (and this
    one), with what each of the `shared` services spent meanwhile."""
    ours = {**started, "bench": lambda: {os.getpid()}}
    services = shared or {}
    busy, total = _machine()
    before = sample({**ours, **services})
    await asyncio.sleep(seconds)
    busy_after, total_after = _machine()
    used = spent(before, sample({**ours, **services}))
    elapsed = (total_after - total) / (os.cpu_count() or 1)
    cores = (busy_after - busy) / max(elapsed, 1e-9)
    own = sum(used[name] for name in ours) / max(elapsed, 1e-9)
    loadavg = " ".join((PROC / "loadavg").read_text().split()[:3])
    return Idleness(max(0.0, cores - own), loadavg, {name: used[name] / max(elapsed, 1e-9) for name in services})
