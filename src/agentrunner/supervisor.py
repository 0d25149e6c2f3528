"""The supervisor of `agentrunner cluster up`: restarts a role process that exits, keeps
the others serving, and publishes what it sees in a state file for `cluster status`.

Each role is a process with a health URL. A role that exits (a crash, an OOM kill, a
`kill -9`) is started again with the same command, so on the same port, after an
exponential backoff (`RestartPolicy`). A restart that exits before it answers
/health/ready, or does not answer within `READY_TIMEOUT_SECONDS`, is a failed start;
`max_failed_starts` of them in a row mean the role cannot start: the supervisor stops
every role and exits 1 naming it. Only Ctrl-C or SIGTERM stops it otherwise.

A role can also hang while its process lives (its event loop blocked, stuck in a call,
SIGSTOPped): an exit never comes. So the supervisor asks every ready role's /health/live
(`agentrunner.liveness`), from a thread pool so that a probe waiting out its timeout holds up
neither the other roles nor the exits it watches for; a role that misses `failures` probes
in a row gets SIGTERM, SIGKILL after a short grace (a hung process does not drain), and is
restarted like one that exited, its last exit saying why.

The state file (`cluster.json` under DATA_DIR, written atomically on every change) holds
the supervisor's pid and each role's pid, state, restart count, last exit and start time;
no secrets (a health URL is a host and a port).
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from agentrunner.domain.errors import ConfigError
from agentrunner.liveness import LivenessPolicy, LivenessWatch, is_live, probe_tls

READY_TIMEOUT_SECONDS = 60.0
DRAIN_SECONDS = 30.0
TICK_SECONDS = 0.2
STATE_FILE_NAME = "cluster.json"


class RoleState(StrEnum):
    """Where a role is in its life under the supervisor."""

    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"  # exited; waiting for its backoff to pass
    STOPPED = "stopped"


@dataclass
class RoleProcess:
    """One supervised role: its current process and how to start it again."""

    role: str
    health_url: str
    process: subprocess.Popen[bytes]
    command: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a role that exited, and when to give up on it.

    The n-th restart of a crash streak waits `initial * factor**(n-1)`, at most `cap`. A
    role that had been ready for `stable_seconds` before it exited starts a new streak (its
    next restart waits `initial` again). `max_failed_starts` restarts in a row that exit
    before they are ready (or are not ready in time) stop the cluster."""

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    stable_seconds: float = 60.0
    max_failed_starts: int = 5

    def delay(self, streak: int) -> float:
        """Seconds to wait before restart number `streak` (1 = the first) of a streak."""
        return float(min(self.cap, self.initial * self.factor ** max(0, streak - 1)))

    def next_streak(self, streak: int, ready_for: float | None) -> int:
        """The streak after an exit: 1 when the role had been ready for `stable_seconds`,
        else one more (`ready_for` None: it never became ready since its last start)."""
        if ready_for is not None and ready_for >= self.stable_seconds:
            return 1
        return streak + 1

    def gives_up(self, failed_starts: int) -> bool:
        """True when that many failed starts in a row mean the role cannot start."""
        return failed_starts >= self.max_failed_starts


def exit_reason(returncode: int) -> str:
    """A process's return code as an operator reads it: `exit code 3`, `signal SIGKILL`."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


_PR_SET_PDEATHSIG = 1


def _stopped_with_the_supervisor() -> Callable[[], None] | None:
    """On Linux, what makes a child get SIGTERM when the supervisor dies, even by `kill -9`
    (prctl PR_SET_PDEATHSIG), run in the child before it execs: roles never outlive their
    supervisor, holding ports a new `cluster up` needs. Elsewhere None (nothing to do)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here: the child only calls it
    supervisor = os.getpid()

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != supervisor:  # it died before the line above: nobody would stop us
            os._exit(1)

    return in_child


def spawn(command: list[str]) -> subprocess.Popen[bytes]:
    """Start a role's process in a session of its own, stopped when the supervisor dies.

    Its own session: Ctrl-C in the terminal reaches only the supervisor, which then stops
    the roles once, in order (a role that got the terminal's SIGINT and then our SIGTERM
    would take the second signal as "force exit" and skip its drain)."""
    # preexec_fn is unsafe with threads when the child, between fork and exec, takes a lock
    # another thread held at the fork. The liveness probes run on threads, but the child
    # only calls prctl (loaded before), os.getppid and os._exit: no import, no I/O buffer,
    # no lock of httpx's; the few Python objects it makes come from pymalloc, guarded by the
    # GIL that the forking thread holds.
    return subprocess.Popen(  # noqa: S603 - our own CLI
        command,
        env=os.environ.copy(),
        start_new_session=True,
        preexec_fn=_stopped_with_the_supervisor(),  # noqa: PLW1509
    )


def _say(line: str) -> None:
    """A line on the supervisor's terminal (what an operator watching `cluster up` reads)."""
    print(line, flush=True)  # noqa: T201


def is_ready(health_url: str) -> bool:
    """True when `health_url`/health/ready answers 200 within a second."""
    try:
        return httpx.get(f"{health_url}/health/ready", timeout=1, verify=probe_tls()).status_code == 200
    except httpx.TransportError:
        return False


def start_roles(plan: list[tuple[str, list[str], str]]) -> list[RoleProcess]:
    """Start every (role, command, health URL) of `plan` and wait until each is ready
    (raises `ConfigError` naming the role that did not come up; any exception, a Ctrl-C
    too, stops what was started)."""
    started: list[RoleProcess] = []
    try:
        for role, command, url in plan:
            started.append(RoleProcess(role, url, spawn(command), command))
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        pending = {member.role: member for member in started}
        while pending and time.monotonic() < deadline:
            for role, member in list(pending.items()):
                if member.process.poll() is not None:
                    raise ConfigError(f"role {role} exited with {member.process.returncode} while starting")
                if is_ready(member.health_url):
                    del pending[role]
            time.sleep(TICK_SECONDS)
        if pending:
            raise ConfigError(f"roles {', '.join(sorted(pending))} not ready within {READY_TIMEOUT_SECONDS:g} s")
    except BaseException:
        stop(started)
        raise
    return started


def stop(members: list[RoleProcess], drain: float = DRAIN_SECONDS) -> None:
    """SIGTERM every role, give them `drain` seconds to finish their work, then SIGKILL."""
    for member in members:
        if member.process.poll() is None:
            member.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + drain
    for member in members:
        try:
            member.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            member.process.kill()
            member.process.wait(5)


def state_file(data_dir: Path) -> Path:
    """Where the supervisor of a cluster with this DATA_DIR publishes its state."""
    return data_dir / STATE_FILE_NAME


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace `path` with `state` as JSON atomically (a reader sees the old or the new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(state, indent=2))
    os.replace(partial, path)


def read_state(path: Path) -> dict[str, Any] | None:
    """The state last written at `path`; None when there is none (or it is not ours)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("supervisor_pid"), int) else None


def supervisor_alive(pid: int) -> bool:
    """True when process `pid` exists (the state file's writer is still running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass
class _Supervised:
    """A role and what the supervisor knows of it."""

    member: RoleProcess
    state: RoleState = RoleState.READY
    restarts: int = 0
    last_exit: str | None = None
    started_at: float = field(default_factory=time.time)  # wall clock, for `cluster status`
    since: float = field(default_factory=time.monotonic)  # when the current state began
    streak: int = 0
    failed_starts: int = 0
    watch: LivenessWatch | None = None  # while ready
    killing: str | None = None  # why the supervisor is stopping this process, until it is gone
    kill_at: float = math.inf  # when SIGKILL follows the SIGTERM of a kill


class Supervisor:
    """Keeps a started cluster's roles running until `request_stop` or a give-up."""

    def __init__(
        self,
        members: list[RoleProcess],
        *,
        state_path: Path,
        policy: RestartPolicy,
        liveness: LivenessPolicy | None = None,
        drain: float = DRAIN_SECONDS,
    ) -> None:
        self._liveness = liveness or LivenessPolicy()
        self._roles = [_Supervised(member, watch=self._watch()) for member in members]
        self._state_path = state_path
        self._policy = policy
        self._drain = drain
        self._stopping = False
        self._started_at = time.time()
        # One thread per role at most (a role has one probe in flight); none start before
        # the first probe, and `run` shuts the pool down.
        self._probes = ThreadPoolExecutor(max_workers=max(1, len(members)), thread_name_prefix="liveness")

    @property
    def members(self) -> list[RoleProcess]:
        """The roles with their current processes."""
        return [entry.member for entry in self._roles]

    def request_stop(self, *_: object) -> None:
        """Stop at the next tick (safe from a signal handler: it only sets a flag)."""
        self._stopping = True

    def run(self) -> int:
        """Supervise until a stop request (0) or a role that cannot start (1); every role
        is stopped on return."""
        self.publish()
        gave_up: str | None = None
        try:
            while not self._stopping and gave_up is None:
                gave_up = self._tick()
                if gave_up is None and not self._stopping:
                    time.sleep(TICK_SECONDS)
        finally:
            # A probe in flight ends within its timeout; nobody reads it any more.
            self._probes.shutdown(wait=False, cancel_futures=True)
        if gave_up is not None:
            _say(f"{gave_up}; stopping the cluster")
        for entry in self._roles:
            if entry.killing is not None:  # hung already: it would only sit out the drain
                entry.member.process.kill()
        stop([entry.member for entry in self._roles], self._drain)
        for entry in self._roles:
            entry.state, entry.killing = RoleState.STOPPED, None
        self.publish(stopped=True)
        return 0 if gave_up is None else 1

    def _tick(self) -> str | None:
        """One look at every role; a give-up message when one cannot start."""
        changed = False
        for entry in self._roles:
            if self._stopping:
                break
            moved, message = self._look(entry)
            if message:
                return message
            changed = changed or moved
        if changed:
            self.publish()
        return None

    def _look(self, entry: _Supervised) -> tuple[bool, str | None]:
        """One look at a role: (whether what `cluster status` shows changed, a give-up message)."""
        process, now = entry.member.process, time.monotonic()
        if entry.state is RoleState.RESTARTING:
            if now < entry.since + self._policy.delay(entry.streak):
                return False, None
            self._restart(entry)
        elif process.poll() is not None:
            return True, self._exited(entry, entry.killing or exit_reason(process.returncode))
        elif entry.killing is not None:
            if now >= entry.kill_at:
                process.kill()
                entry.kill_at = math.inf
            return False, None
        elif entry.state is RoleState.STARTING:
            if is_ready(entry.member.health_url):
                entry.state, entry.since, entry.failed_starts = RoleState.READY, time.monotonic(), 0
                entry.watch = self._watch()
                _say(f"role {entry.member.role} ready again (pid {process.pid}, restart {entry.restarts})")
            elif now - entry.since > READY_TIMEOUT_SECONDS:
                self._kill(entry, f"not ready within {READY_TIMEOUT_SECONDS:g} s", grace=5)
            else:
                return False, None
        elif entry.watch is None or not entry.watch.step(now, partial(self._probe, entry.member.health_url)):
            return False, None
        else:
            self._kill(entry, self._liveness.reason, grace=self._liveness.kill_grace)
        return True, None

    def _watch(self) -> LivenessWatch:
        """The liveness watch of a process that has just become ready."""
        return LivenessWatch(self._liveness, due=time.monotonic() + self._liveness.interval)

    def _probe(self, health_url: str) -> Future[bool]:
        return self._probes.submit(is_live, health_url, self._liveness.timeout)

    def _kill(self, entry: _Supervised, reason: str, *, grace: float) -> None:
        """Stop a process that is up but not doing its job: SIGTERM now, SIGKILL after
        `grace` seconds; `_look` restarts it once it is gone, with `reason` as its exit."""
        entry.killing, entry.kill_at, entry.watch = reason, time.monotonic() + grace, None
        entry.member.process.send_signal(signal.SIGTERM)
        role, pid = entry.member.role, entry.member.process.pid
        _say(f"role {role} (pid {pid}) {reason}; stopping it (SIGTERM, SIGKILL in {grace:g} s)")

    def _exited(self, entry: _Supervised, reason: str) -> str | None:
        """Record an unexpected exit (or the end of a kill) and schedule the restart; a
        give-up message instead when the role has failed to start `max_failed_starts` times
        in a row."""
        ready_for = time.monotonic() - entry.since if entry.state is RoleState.READY else None
        ended = "was stopped:" if entry.killing else "exited with"
        entry.last_exit, entry.killing, entry.kill_at, entry.watch = reason, None, math.inf, None
        role, pid = entry.member.role, entry.member.process.pid
        if ready_for is None:
            entry.failed_starts += 1
            if self._policy.gives_up(entry.failed_starts):
                return f"role {role} failed to start {entry.failed_starts} times in a row (last: {reason})"
        entry.streak = self._policy.next_streak(entry.streak, ready_for)
        entry.state, entry.since = RoleState.RESTARTING, time.monotonic()
        delay = self._policy.delay(entry.streak)
        _say(f"role {role} (pid {pid}) {ended} {reason}; restart {entry.restarts + 1} in {delay:g} s")
        return None

    def _restart(self, entry: _Supervised) -> None:
        entry.member.process = spawn(entry.member.command)
        entry.restarts += 1
        entry.state, entry.since, entry.started_at = RoleState.STARTING, time.monotonic(), time.time()

    def publish(self, *, stopped: bool = False) -> None:
        """Write what the supervisor knows to its state file."""
        write_state(
            self._state_path,
            {
                "supervisor_pid": os.getpid(),
                "started_at": self._started_at,
                "stopped": stopped,
                "roles": [
                    {
                        "role": entry.member.role,
                        "pid": None if entry.state is RoleState.RESTARTING else entry.member.process.pid,
                        # A role being killed shows as such, whatever it was before.
                        "state": "stopping" if entry.killing else entry.state.value,
                        "restarts": entry.restarts,
                        "last_exit": entry.last_exit,
                        "started_at": entry.started_at,
                        "health_url": entry.member.health_url,
                    }
                    for entry in self._roles
                ],
            },
        )


def _interrupt(_: int, __: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_cluster(
    plan: list[tuple[str, list[str], str]],
    *,
    state_path: Path,
    policy: RestartPolicy,
    liveness: LivenessPolicy | None = None,
    drain: float = DRAIN_SECONDS,
) -> int:
    """Start `plan`'s roles, then supervise them in the main thread until SIGINT or SIGTERM
    (0) or a role that cannot start (1); raises `ConfigError` when the first start fails."""
    # SIGTERM while starting stops what was started, as Ctrl-C does: the roles run in
    # sessions of their own, so nobody else would stop them.
    signal.signal(signal.SIGTERM, _interrupt)
    members: list[RoleProcess] = []
    try:
        members = start_roles(plan)  # stops what it started when interrupted
        supervisor = Supervisor(members, state_path=state_path, policy=policy, liveness=liveness, drain=drain)
        signal.signal(signal.SIGTERM, supervisor.request_stop)
        signal.signal(signal.SIGINT, supervisor.request_stop)
    except KeyboardInterrupt:
        stop(members, drain)  # interrupted between the start and the handlers above
        _say("agentrunner cluster: stopped while starting")
        return 1
    supervisor.publish()  # before the line below: who waits for it can read the state file
    _say(f"agentrunner cluster: {len(members)} processes ready; Ctrl-C stops them")
    return supervisor.run()
