"""The supervisor's restart rules (`cluster up`): backoff, when a crash streak starts over,
when a role is given up on, how an exit reads, and the state file `cluster status` reads."""

from __future__ import annotations

import os
from pathlib import Path

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
