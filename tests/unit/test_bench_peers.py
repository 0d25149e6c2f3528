"""bench/peers.py (issue 23's measuring tool) is not run in CI: these check that it imports,
parses its options and prints its table as the issue reads it, and that its CPU accounting
counts what it says it counts."""

from __future__ import annotations

import asyncio
import dataclasses
import os

import pytest
from bench import peers, peers_cpu
from bench.peers_systems import SYSTEMS, _our_stamps


def _result(
    key: str, rate: float, cpu: dict[str, float], *, idle: bool = True, background: dict[str, float] | None = None
) -> peers.Result:
    check = peers_cpu.Idleness(0.0 if idle else 1.5, "0.10 0.20 0.30")
    return peers.Result(
        key=key,
        label=f"label of {key}",
        baseline=next(s.baseline for s in SYSTEMS if s.key == key),
        seq_p50_ms=5.0,
        rate=rate,
        load_p99_ms=40.0,
        cpu_ms=cpu,
        load_generator_ms=0.5,
        background_ms=background or {},
        checks=(check,),
    )


def test_the_options_default_to_every_system_with_the_issues_load() -> None:
    options = peers.parse_args([])

    assert options.only == tuple(s.key for s in SYSTEMS)
    assert (options.sequential, options.total, options.concurrency, options.rounds) == (200, 1000, 16, 1)
    assert not options.skip_install


def test_only_some_systems_and_a_smaller_load_can_be_chosen() -> None:
    options = peers.parse_args(
        [
            "--only",
            "embedded, celery-redis",
            "--total",
            "50",
            "--sequential",
            "5",
            "--concurrency",
            "4",
            "--skip-install",
        ]
    )

    assert options.only == ("embedded", "celery-redis")
    assert (options.sequential, options.total, options.concurrency, options.skip_install) == (5, 50, 4, True)


@pytest.mark.parametrize("argv", [["--only", "embedded,rq"], ["--only", ","], ["--total", "0"], ["--rounds", "0"]])
def test_an_unknown_system_or_an_empty_load_is_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        peers.parse_args(argv)


def test_the_table_gives_each_peer_as_a_multiple_of_the_agentrunner_system_it_is_compared_with() -> None:
    results = [
        _result("embedded", 150.0, {"agentrunner up": 6.0}),
        _result(
            "distributed",
            125.0,
            {"orchestrator": 4.0, "worker": 6.0, "postgresql": 3.0},
            background={"postgresql": 0.25},
        ),
        _result("dbos-sqlite", 100.0, {"dbos server": 9.0}),
        _result("celery-redis", 250.0, {"celery worker": 2.0, "rabbitmq": 1.0}),
    ]

    table = peers.format_table(results, concurrency=16).splitlines()

    assert table[0].startswith("| system | seq p50 ms | jobs/s | p99 ms x16 | CPU ms/job |")
    assert table[2] == "| label of embedded | 5.0 | 150 | 40 | 6.0 | - | - |"
    assert table[3] == "| label of distributed | 5.0 | 125 | 40 | 13.0 | - | - |"
    assert table[4] == "| label of dbos-sqlite | 5.0 | 100 | 40 | 9.0 | 0.67x (embedded) | 1.50x (embedded) |"
    assert table[5] == "| label of celery-redis | 5.0 | 250 | 40 | 3.0 | 2.00x (distributed) | 0.23x (distributed) |"
    assert (
        "- label of distributed: orchestrator 4.00, worker 6.00, postgresql 3.00 (0.25); load generator 0.50" in table
    )
    assert not any("WARNING" in line for line in table)


def test_a_sequential_job_is_cut_at_the_times_its_execution_recorded() -> None:
    answer = (
        b'{"status": "succeeded", "created_at": "2026-12-07T10:00:00.001000Z",'
        b' "started_at": "2026-12-07T10:00:00.004000+00:00", "finished_at": "2026-12-07T10:00:00.0065Z"}'
    )
    created, started, finished = _our_stamps(answer)
    sent = created - 0.001

    cut = peers.stages(
        [(sent, created, started, finished, finished + 0.005), (sent, created, started, started, started)]
    )

    assert list(cut) == [name for name, _ in peers.STAGES]
    assert cut["accepted"] == pytest.approx(1.0, abs=0.01)
    assert cut["dispatched"] == pytest.approx(3.0, abs=0.01)
    assert cut["ran"] == pytest.approx(0.0, abs=0.01)  # nearest rank: the lower of two
    assert cut["answered"] == pytest.approx(0.0, abs=0.01)


def test_the_table_says_where_a_sequential_job_of_ours_spent_its_time() -> None:
    staged = _result("distributed", 125.0, {"worker": 6.0})
    staged = dataclasses.replace(staged, stages_ms={"accepted": 1.04, "dispatched": 3.1, "ran": 2.5, "answered": 5.26})

    table = peers.format_table([staged, _result("celery-redis", 250.0, {"celery worker": 2.0})], 16).splitlines()

    assert "- label of distributed: accepted 1.0, dispatched 3.1, ran 2.5, answered 5.3" in table
    assert not any(line.startswith("- label of celery-redis: accepted") for line in table)


def test_rounds_give_each_system_its_median_figure_by_figure_and_each_rounds_own_ratios() -> None:
    def ours(rate: float, worker: float, answered: float) -> peers.Result:
        return dataclasses.replace(
            _result("distributed", rate, {"worker": worker, "postgresql": 1.0}), stages_ms={"answered": answered}
        )

    rounds = [
        {"distributed": ours(100.0, 8.0, 5.0), "dbos-postgres": _result("dbos-postgres", 100.0, {"dbos server": 9.0})},
        {"distributed": ours(200.0, 4.0, 4.0), "dbos-postgres": _result("dbos-postgres", 100.0, {"dbos server": 10.0})},
        {"distributed": ours(150.0, 6.0, 9.0)},  # the peer failed in this round: no ratio
    ]

    medians = {r.key: r for r in peers.combined(rounds)}
    ratios = peers.format_rounds(rounds).splitlines()

    assert medians["distributed"].rate == 150.0
    assert medians["distributed"].cpu_ms == {"worker": 6.0, "postgresql": 1.0}
    assert medians["distributed"].stages_ms == {"answered": 5.0}
    assert len(medians["distributed"].checks) == 3  # every round's idle checks are kept
    assert medians["dbos-postgres"].rate == 100.0
    assert medians["dbos-postgres"].cpu_ms == {"dbos server": 9.5}  # two rounds: the mean of the middle two
    assert ratios[1:] == ["- label of dbos-postgres vs distributed: 1.00x/1.00x, 0.50x/2.00x"]


def test_the_table_says_when_the_machine_was_not_idle() -> None:
    table = peers.format_table([_result("embedded", 150.0, {"agentrunner up": 6.0}, idle=False)], concurrency=16)

    assert "WARNING: the machine was not idle" in table
    assert "1.50 cores busy outside this run, loadavg 0.10 0.20 0.30" in table


def test_a_peer_without_its_agentrunner_system_in_the_run_has_no_ratio() -> None:
    table = peers.format_table([_result("celery-redis", 250.0, {"celery worker": 2.0})], concurrency=16)

    assert "| label of celery-redis | 5.0 | 250 | 40 | 2.0 | - | - |" in table.splitlines()


def test_cpu_of_a_phase_counts_a_process_born_in_it_in_full_and_one_gone_not_at_all() -> None:
    before = {"server": {1: 1.0, 2: 5.0}, "postgresql": {10: 2.0}}
    after = {"server": {1: 1.5, 3: 0.25}, "postgresql": {10: 2.0}}

    assert peers_cpu.spent(before, after) == {"server": 0.75, "postgresql": 0.0}


def test_this_process_group_and_its_cpu_are_found_in_proc() -> None:
    kind = peers_cpu.group(os.getpgrp())

    taken = peers_cpu.sample({"bench": kind})

    assert os.getpid() in taken["bench"]
    assert taken["bench"][os.getpid()] > 0


@pytest.mark.parametrize(
    ("title", "database"),
    [
        ("postgres: 15/main: postgres agentrunner_bench_x_ours 127.0.0.1(55446) idle", "agentrunner_bench_x_ours"),
        ("postgres: 15/main: app shop [local] SELECT", "shop"),
        ("postgres: 15/main: checkpointer ", None),
        ("postgres: 15/main: autovacuum launcher ", None),
        ("/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main -c config_file=x", None),
    ],
)
def test_a_postgres_client_backend_is_told_by_its_database(title: str, database: str | None) -> None:
    assert peers_cpu.backend_database(title) == database


def test_the_idle_check_reports_the_load_average_and_what_each_shared_service_spent() -> None:
    idleness = asyncio.run(peers_cpu.idleness({}, {"this test": lambda: {os.getpid()}}, seconds=0.05))

    assert idleness.other_cores >= 0
    assert len(idleness.loadavg.split()) == 3
    assert set(idleness.shared_cores) == {"this test"}
