"""bench/scale_agents.py (issue 23's point 3) is not run in CI: this checks that its table
shows each figure's median over the rounds and the range of its ratio round by round."""

from __future__ import annotations

import pytest
from bench.scale_agents import ROLES, Figures, StartUps, table


def _figures(cpu: float, *, invocation_ms: float = 5.0) -> Figures:
    def startups() -> StartUps:
        return StartUps(
            pids=dict.fromkeys(ROLES, 1),
            startup_s=dict.fromkeys(ROLES, 2 * cpu),
            startup_cpu_s=dict.fromkeys(ROLES, cpu),
            broker_cpu_s=0.0,
            channels=41,
        )

    return Figures(
        first=startups(),
        idle_cpu_pct=dict.fromkeys(ROLES, 0.5),
        rss_mb=dict.fromkeys(ROLES, 120.0),
        cpu_ms_per_invocation=invocation_ms,
        load="0.10 0.20 0.30",
        again=startups(),
    )


def test_the_table_shows_medians_and_the_ratio_round_by_round(capsys: pytest.CaptureFixture[str]) -> None:
    # Three rounds: the host slow in the second (both sizes), a 1,000-agent start 2.4x in the third.
    results = {
        10: [_figures(1.0), _figures(2.0), _figures(1.0)],
        1000: [_figures(1.2), _figures(2.6), _figures(2.4, invocation_ms=4.0)],
    }

    table("this checkout", results)

    lines = {line.split(" | ")[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    assert lines["| figure"] == "| figure | 10 agents | 1000 agents | 1000 / 10 | by round |"
    # medians 1.0 and 2.4: 2.40x; by round 1.2x, 1.3x, 2.4x
    assert (
        lines["| orchestrator start-up CPU"] == "| orchestrator start-up CPU | 1.00 s | 2.40 s | 2.40x | 1.20-2.40x |"
    )
    assert lines["| CPU per invocation"] == "| CPU per invocation | 5.00 ms | 5.00 ms | 1.00x | 0.80-1.00x |"
    # a figure that is zero at the small size has no ratio
    assert lines["| broker CPU over the start-ups"].endswith("| - | - |")


def test_one_round_has_no_range_column(capsys: pytest.CaptureFixture[str]) -> None:
    table("this checkout", {10: [_figures(1.0)], 100: [_figures(1.1)]})

    out = capsys.readouterr().out
    assert "| figure | 10 agents | 100 agents | 100 / 10 |\n" in out
    assert "| autonomous restart CPU | 1.00 s | 1.10 s | 1.10x |\n" in out
