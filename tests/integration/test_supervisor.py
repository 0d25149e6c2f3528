"""The supervisor of `cluster up` over stand-in role processes (tests/integration/
standin_role.py; the real roles are in tests/e2e/test_cluster.py): a role that cannot start
N times in a row stops the cluster, and a stop during a backoff wait, a restart or the first
start leaves no process behind."""

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

from tests.conftest import free_port
from tests.e2e.test_cluster import alive, wait_gone

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

    def wait_state(self, role: str, state: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (current := self.roles()[role])["state"] != state:
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
    tmp_path: Path, roles: dict[str, str], *, policy: dict[str, Any], drain: float = 5, ready: bool = True
) -> Iterator[Supervised]:
    """A supervisor over `roles` (name -> the file to create in its folder before the first
    start, "" for none), once it says every role is ready (unless `ready` is False);
    killed with every process it started afterwards."""
    plan = []
    for role, mode in roles.items():
        (tmp_path / role).mkdir()
        if mode:
            (tmp_path / role / mode).touch()
        port = free_port()
        command = [sys.executable, str(HERE / "standin_role.py"), str(tmp_path / role), str(port)]
        plan.append([role, command, f"http://127.0.0.1:{port}"])
    config = {"roles": plan, "state": str(tmp_path / "cluster.json"), "policy": policy, "drain": drain}
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
            deadline = time.monotonic() + 60
            while (current := cluster.roles()["flaky"]) != {**current, "state": "ready", "restarts": restarts}:
                assert cluster.process.poll() is None, cluster.log()
                assert time.monotonic() < deadline, (current, cluster.log())
                time.sleep(0.02)
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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_roles_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    with supervised(tmp_path, {"steady": "", "other": ""}, policy={}) as cluster:
        pids = [role["pid"] for role in cluster.roles().values()]
        cluster.process.kill()
        cluster.process.wait(30)
        left = wait_gone(pids)

    assert left == []
