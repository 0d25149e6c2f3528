"""The supervisor of `cluster up` over stand-in role processes (tests/integration/
standin_role.py; the real roles are in tests/e2e/test_cluster.py): a role that cannot start
N times in a row stops the cluster, a role that lives but stops answering /health/live is
killed and restarted (one that answers slowly is not), and a stop during a backoff wait, a
restart, a liveness kill or the first start leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cluster import alive, wait_gone
from tests.ports import free_port

HERE = Path(__file__).parent


@dataclass
class Supervised:
    """A supervisor process over stand-in roles, each with a folder of its own."""

    process: subprocess.Popen[bytes]
    folder: Path

    def log(self) -> str:
        return (self.folder / "supervisor.log").read_text()

    def roles(self) -> dict[str, dict[str, Any]]:
        state = json.loads((self.folder / "cluster.json").read_text())
        return {role["role"]: role for role in state["roles"]}

    def wait_state(self, role: str, state: str, timeout: float = 60, **fields: Any) -> dict[str, Any]:
        """`role` as the state file shows it once it is in `state` with `fields`."""
        deadline = time.monotonic() + timeout
        while (current := self.roles()[role]) != {**current, "state": state, **fields}:
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, (current, self.log())
            time.sleep(0.02)
        return current

    def started(self, role: str) -> list[int]:
        """Pids of every process ever started for `role`."""
        return [int(path.suffix[1:]) for path in (self.folder / role).glob("started.*")]


def wait_file(pattern: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not list(pattern.parent.glob(pattern.name)):
        assert time.monotonic() < deadline, pattern
        time.sleep(0.02)


@contextmanager
def supervised(
    tmp_path: Path,
    roles: dict[str, str],
    *,
    policy: dict[str, Any],
    liveness: dict[str, Any] | None = None,
    drain: float = 5,
    ready: bool = True,
) -> Iterator[Supervised]:
    """A supervisor over `roles` (name -> the file to create in its folder before the first
    start, "" for none), once it says every role is ready (unless `ready` is False);
    killed with every process it started afterwards. `liveness`: LivenessPolicy fields
    (none: its defaults)."""
    plan = []
    for role, mode in roles.items():
        (tmp_path / role).mkdir()
        if mode:
            (tmp_path / role / mode).touch()
        port = free_port()
        command = [sys.executable, str(HERE / "standin_role.py"), str(tmp_path / role), str(port)]
        plan.append([role, command, f"http://127.0.0.1:{port}"])
    config = {
        "roles": plan,
        "state": str(tmp_path / "cluster.json"),
        "policy": policy,
        "liveness": liveness or {},
        "drain": drain,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    with (tmp_path / "supervisor.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(HERE / "supervised.py"), str(tmp_path / "config.json")], stdout=log, stderr=log
        )
    cluster = Supervised(process, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while ready and "processes ready" not in cluster.log():
            assert process.poll() is None, cluster.log()
            assert time.monotonic() < deadline, cluster.log()
            time.sleep(0.02)
        yield cluster
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for role in roles:
            for pid in cluster.started(role):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


def test_a_role_that_cannot_start_n_times_in_a_row_stops_the_cluster(tmp_path: Path) -> None:
    with supervised(tmp_path, {"steady": "", "flaky": ""}, policy={"initial": 0.05, "max_failed_starts": 3}) as cluster:
        (tmp_path / "flaky" / "fail").touch()
        os.kill(cluster.roles()["flaky"]["pid"], signal.SIGKILL)
        code = cluster.process.wait(60)
        left = wait_gone(cluster.started("steady") + cluster.started("flaky"))
        roles = cluster.roles()

    assert code == 1
    assert "role flaky failed to start 3 times in a row (last: exit code 3); stopping the cluster" in cluster.log()
    assert "role flaky (pid" in cluster.log()
    assert "exited with signal SIGKILL; restart 1 in 0.05 s" in cluster.log()
    assert "exited with exit code 3; restart 3 in 0.2 s" in cluster.log()
    assert left == []
    assert len(cluster.started("flaky")) == 4  # the first start and three restarts
    assert roles["flaky"]["restarts"] == 3
    assert roles["flaky"]["last_exit"] == "exit code 3"
    assert {role["state"] for role in roles.values()} == {"stopped"}


def test_a_restart_that_comes_back_ready_sets_the_failed_starts_back_to_zero(tmp_path: Path) -> None:
    with supervised(tmp_path, {"flaky": ""}, policy={"initial": 0.05, "max_failed_starts": 2}) as cluster:
        for restarts in (2, 4, 6):  # each kill: one restart fails, the next one is ready
            (tmp_path / "flaky" / "fail").write_text("1")
            os.kill(cluster.roles()["flaky"]["pid"], signal.SIGKILL)
            cluster.wait_state("flaky", "ready", restarts=restarts)
        cluster.process.send_signal(signal.SIGTERM)
        code = cluster.process.wait(30)

    assert code == 0, cluster.log()
    assert cluster.log().count("exited with exit code 3") == 3
    assert cluster.log().count("ready again") == 3


def test_a_stop_during_a_backoff_wait_stops_everything_without_waiting_it_out(tmp_path: Path) -> None:
    with supervised(tmp_path, {"steady": "", "flaky": ""}, policy={"initial": 600, "cap": 600}) as cluster:
        os.kill(cluster.roles()["flaky"]["pid"], signal.SIGKILL)
        waiting = cluster.wait_state("flaky", "restarting")
        cluster.process.send_signal(signal.SIGTERM)
        code = cluster.process.wait(60)  # far less than the 600 s backoff
        left = wait_gone(cluster.started("steady") + cluster.started("flaky"))

    assert waiting["pid"] is None
    assert code == 0, cluster.log()
    assert "restart 1 in 600 s" in cluster.log()
    assert left == []
    assert len(cluster.started("flaky")) == 1


def test_a_role_being_restarted_when_the_stop_comes_is_not_left_behind(tmp_path: Path) -> None:
    with supervised(tmp_path, {"steady": "", "flaky": ""}, policy={"initial": 0.05}, drain=1) as cluster:
        (tmp_path / "flaky" / "hang").touch()  # the restart ignores SIGTERM and never answers
        os.kill(cluster.roles()["flaky"]["pid"], signal.SIGKILL)
        starting = cluster.wait_state("flaky", "starting")
        wait_file(tmp_path / "flaky" / f"hanging.{starting['pid']}")
        cluster.process.send_signal(signal.SIGTERM)
        code = cluster.process.wait(60)
        left = wait_gone(cluster.started("steady") + cluster.started("flaky"))

    assert code == 0, cluster.log()
    assert starting["restarts"] == 1
    assert left == []


def test_a_stop_during_the_first_start_leaves_no_process_behind(tmp_path: Path) -> None:
    with supervised(tmp_path, {"steady": "", "slow": "slow"}, policy={}, ready=False) as cluster:
        wait_file(tmp_path / "steady" / "started.*")
        wait_file(tmp_path / "slow" / "started.*")
        cluster.process.send_signal(signal.SIGTERM)
        code = cluster.process.wait(60)
        left = wait_gone(cluster.started("steady") + cluster.started("slow"))

    assert code == 1
    assert "stopped while starting" in cluster.log()
    assert left == []


# Probes often, but each waits 2 s: a loaded machine does not make the steady role miss
# three in a row.
QUICK_LIVENESS = {"interval": 0.2, "timeout": 2, "failures": 3, "kill_grace": 1}
NOT_LIVE = "not live: /health/live did not answer 3 times in a row"


def answered(folder: Path, pid: int) -> int:
    """How many /health/live probes process `pid` of the stand-in in `folder` answered."""
    try:
        return len((folder / f"live.{pid}").read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_a_role_that_lives_but_stops_answering_is_killed_and_restarted(tmp_path: Path) -> None:
    with supervised(tmp_path, {"steady": "", "hung": ""}, policy={"initial": 0.05}, liveness=QUICK_LIVENESS) as cluster:
        before = cluster.roles()
        hung = before["hung"]["pid"]
        os.kill(hung, signal.SIGSTOP)  # alive, its socket open, answering nothing
        after = cluster.wait_state("hung", "ready", restarts=1)
        left = wait_gone([hung])
        steady = cluster.roles()["steady"]
        cluster.process.send_signal(signal.SIGTERM)
        code = cluster.process.wait(60)

    assert after["last_exit"] == NOT_LIVE
    assert after["pid"] != hung
    assert left == []
    assert f"role hung (pid {hung}) {NOT_LIVE}; stopping it (SIGTERM, SIGKILL in 1 s)" in cluster.log()
    assert f"role hung (pid {hung}) was stopped: {NOT_LIVE}; restart 1 in 0.05 s" in cluster.log()
    assert len(cluster.started("hung")) == 2
    assert (steady["pid"], steady["restarts"], steady["last_exit"]) == (before["steady"]["pid"], 0, None)
    assert code == 0, cluster.log()


def test_a_role_that_answers_slowly_within_the_timeout_is_not_restarted(tmp_path: Path) -> None:
    liveness = {"interval": 0.1, "timeout": 3, "failures": 2}
    with supervised(tmp_path, {"slow": ""}, policy={"initial": 0.05}, liveness=liveness) as cluster:
        pid = cluster.roles()["slow"]["pid"]
        # Each answer takes five probe intervals: the probe in flight is not a miss.
        (tmp_path / "slow" / "slow-live").write_text("0.5")
        first = answered(tmp_path / "slow", pid)
        deadline = time.monotonic() + 60
        while answered(tmp_path / "slow", pid) < first + 6:
            assert cluster.process.poll() is None, cluster.log()
            assert time.monotonic() < deadline, cluster.log()
            time.sleep(0.05)
        role = cluster.roles()["slow"]

    assert (role["state"], role["pid"], role["restarts"], role["last_exit"]) == ("ready", pid, 0, None)
    assert "not live" not in cluster.log()
    assert cluster.started("slow") == [pid]


def test_a_stop_during_a_liveness_kill_leaves_no_process_behind(tmp_path: Path) -> None:
    # SIGKILL would come 600 s after the SIGTERM a stopped process cannot act on, and the
    # drain is 600 s too: only a stop that kills the hung role at once ends within the wait.
    liveness = {**QUICK_LIVENESS, "kill_grace": 600}
    with supervised(
        tmp_path, {"steady": "", "hung": ""}, policy={"initial": 0.05}, liveness=liveness, drain=600
    ) as cluster:
        hung = cluster.roles()["hung"]["pid"]
        os.kill(hung, signal.SIGSTOP)
        stopping = cluster.wait_state("hung", "stopping")
        cluster.process.send_signal(signal.SIGTERM)
        code = cluster.process.wait(60)
        left = wait_gone(cluster.started("steady") + cluster.started("hung"))
        roles = cluster.roles()

    assert stopping["pid"] == hung
    assert f"role hung (pid {hung}) {NOT_LIVE}; stopping it (SIGTERM, SIGKILL in 600 s)" in cluster.log()
    assert code == 0, cluster.log()
    assert left == []
    assert cluster.started("hung") == [hung]
    assert {role["state"] for role in roles.values()} == {"stopped"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_roles_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    with supervised(tmp_path, {"steady": "", "other": ""}, policy={}) as cluster:
        pids = [role["pid"] for role in cluster.roles().values()]
        cluster.process.kill()
        cluster.process.wait(30)
        left = wait_gone(pids)

    assert left == []
