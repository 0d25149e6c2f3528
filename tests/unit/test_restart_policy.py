"""The supervisor's restart rules (`cluster up`): backoff, when a crash streak starts over,
when a role is given up on, how an exit reads, and the state file `cluster status` reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentrunner.cli import app
from agentrunner.supervisor import RestartPolicy, exit_reason, read_state, state_file, write_state


def test_the_backoff_doubles_from_half_a_second_to_a_cap() -> None:
    policy = RestartPolicy()

    assert [policy.delay(streak) for streak in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_a_role_that_stayed_ready_long_enough_starts_a_new_streak() -> None:
    policy = RestartPolicy(stable_seconds=60)

    assert policy.next_streak(4, ready_for=60.0) == 1
    assert policy.next_streak(4, ready_for=59.9) == 5
    assert policy.next_streak(0, ready_for=1.0) == 1


def test_an_exit_before_ready_continues_the_streak() -> None:
    assert RestartPolicy().next_streak(3, ready_for=None) == 4


def test_the_supervisor_gives_up_after_max_failed_starts_in_a_row() -> None:
    policy = RestartPolicy(max_failed_starts=5)

    assert [policy.gives_up(count) for count in range(1, 7)] == [False, False, False, False, True, True]


def test_an_exit_reads_as_its_code_or_its_signal() -> None:
    assert exit_reason(0) == "exit code 0"
    assert exit_reason(3) == "exit code 3"
    assert exit_reason(-9) == "signal SIGKILL"
    assert exit_reason(-15) == "signal SIGTERM"
    assert exit_reason(-99) == "signal 99"


def test_the_state_file_is_replaced_whole(tmp_path: Path) -> None:
    path = state_file(tmp_path / "data")
    write_state(path, {"supervisor_pid": 1, "roles": []})
    write_state(path, {"supervisor_pid": os.getpid(), "roles": [{"role": "state"}]})

    assert path == tmp_path / "data" / "cluster.json"
    assert read_state(path) == {"supervisor_pid": os.getpid(), "roles": [{"role": "state"}]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["cluster.json"]


def test_a_missing_or_foreign_state_file_reads_as_no_cluster(tmp_path: Path) -> None:
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "other.json").write_text('{"roles": []}')

    assert read_state(tmp_path / "absent.json") is None
    assert read_state(tmp_path / "garbage.json") is None
    assert read_state(tmp_path / "other.json") is None


def _status(monkeypatch: pytest.MonkeyPatch, data_dir: Path, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    result = CliRunner().invoke(app, ["cluster", "status", *args])
    return result.exit_code, result.output


def test_cluster_status_without_a_cluster_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_state(state_file(tmp_path / "old"), {"supervisor_pid": gone.pid, "stopped": False, "roles": []})

    never = _status(monkeypatch, tmp_path / "none")
    killed = _status(monkeypatch, tmp_path / "old")

    assert never[0] == 1
    assert "no cluster running (no state file at" in " ".join(never[1].split())
    assert killed[0] == 1
    assert f"the supervisor, pid {gone.pid}" in " ".join(killed[1].split())


def test_cluster_status_shows_each_role_of_a_running_supervisor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    role = {"role": "orchestrator", "pid": 4301, "state": "ready", "restarts": 2, "last_exit": "signal SIGKILL"}
    restarting = {"role": "autonomous-1", "pid": None, "state": "restarting", "restarts": 1, "last_exit": "exit code 1"}
    started = time.time() - 125
    roles = [{**role, "started_at": started}, {**restarting, "started_at": started}]
    write_state(state_file(tmp_path), {"supervisor_pid": os.getpid(), "stopped": False, "roles": roles})

    code, table = _status(monkeypatch, tmp_path)
    json_code, text = _status(monkeypatch, tmp_path, "--json")
    shown = {entry["role"]: entry for entry in json.loads(text)["roles"]}

    assert code == 0
    assert "orchestrator" in table
    assert "signal SIGKILL" in table
    assert "2m0" in table  # ~125 s up
    assert json_code == 0
    assert shown["orchestrator"]["uptime_seconds"] >= 125
    assert shown["autonomous-1"]["uptime_seconds"] is None
