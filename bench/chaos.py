"""The chaos campaign: `agentrunner cluster up --autonomous N` on private PostgreSQL, Redis and
RabbitMQ (scripts/private_services.sh; the shared services are never touched), invocations at
`--rate` a second from clients that retry with their Idempotency-Key, and every fault one
after another: kill -9 of a worker, the orchestrator, the scheduler, the collaborative pool;
a RabbitMQ restart; a Redis outage; a PostgreSQL restart (an immediate shutdown: a crash).

The campaign's `--minutes` are shared by the faults: each runs its load that long, the fault
in the middle. It prints one row per fault (tests/chaos/harness.py says how each figure is
measured): accepted, succeeded, lost (accepted, never terminal), duplicated (a prompt recorded
twice, a key answered with two executions), the `max_concurrency: 2` agent's peak, requests
never accepted after their retries, failed attempts (client errors) and those outside the
window the fault may cost, seconds until an invocation succeeds end to end after the fault
(recovery) and until a killed role's replacement is ready (role back).

Run: .venv/bin/python bench/chaos.py [--minutes 8] [--rate 15] [--autonomous 3] [--redis-outage 30]
     [--only "worker kill -9,redis outage"]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.chaos

from tests.chaos.harness import Fault, FaultReport, chaos_cluster, kill_role, outage, restart, run_fault, table


def faults(redis_outage: float) -> dict[str, Fault]:
    """Every fault of the campaign, by the name its row carries."""
    return {
        "worker kill -9": kill_role("autonomous"),
        "orchestrator kill -9": kill_role("orchestrator", errors_allowed=True),
        "scheduler kill -9": kill_role("scheduler"),
        "collaborative kill -9": kill_role("collaborative"),
        "rabbitmq restart": restart("rabbitmq", "graceful"),
        "redis outage": outage("redis", redis_outage),
        "postgresql restart": outage("pg", 3.0),  # down 3 s, as a real restart is
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="the whole campaign's load, shared by the faults")
    parser.add_argument("--rate", type=float, default=15.0, help="invocations a second")
    parser.add_argument("--autonomous", type=int, default=3, help="autonomous worker processes")
    parser.add_argument("--redis-outage", type=float, default=30.0, help="seconds Redis is down")
    parser.add_argument("--only", default="", help="comma-separated fault names (default: all)")
    args = parser.parse_args()

    chosen = faults(args.redis_outage)
    if args.only:
        names = [name.strip() for name in args.only.split(",")]
        unknown = [name for name in names if name not in chosen]
        if unknown:
            parser.error(f"unknown faults {unknown}; known: {', '.join(chosen)}")
        chosen = {name: chosen[name] for name in names}
    # Load before and after each fault: its share of the campaign, split around the fault.
    share = args.minutes * 60 / len(chosen) / 2
    reports: list[FaultReport] = []
    with tempfile.TemporaryDirectory(prefix="agentrunner-chaos-") as directory:
        began = time.monotonic()
        with chaos_cluster(Path(directory), autonomous=args.autonomous) as cluster:
            print(f"cluster up ({args.autonomous} autonomous) in {time.monotonic() - began:.1f} s", flush=True)
            for name, fault in chosen.items():
                cluster.ensure_up()
                label = f"redis outage {args.redis_outage:g} s" if name == "redis outage" else name
                report = run_fault(cluster, label, fault, rate=args.rate, before=share, after=share)
                reports.append(report)
                print(table([report]).splitlines()[-1], *report.notes, flush=True)
    print(f"\n{len(chosen)} faults at {args.rate:g} invocations/s over {args.minutes:g} minutes\n")
    print(table(reports))
    for report in reports:
        print(
            f"{report.fault}: failed attempts {report.error_kinds or '-'}; not succeeded {report.not_succeeded or '-'};"
            f" orchestrator readiness {report.readiness}"
        )


if __name__ == "__main__":
    main()
