"""Fire lateness and idle CPU of the scheduler, next to APScheduler 3 (in-memory, one
process, no claims) in the same run.

- lateness: 1,000 interval schedules (10 s each, start times spread over the interval:
  100 fires/s), and the same 1,000 all due at the same instant (every 5 s: bursts of
  1,000). Lateness = time a `scheduled.tasks` event reaches a subscriber on the bus minus
  the tick's scheduled time: the claim (fire row + execution + outbox in one transaction)
  and the publish included. Only the scheduler runs (no worker pool), on the embedded
  SQLite database by default, or `--database-url postgresql+asyncpg://...` (a scratch
  database you own: the bench writes schedules into it).
- idle CPU: 10,000 schedules loaded (yearly cron: none fires), the scheduler and its
  watch running; process CPU time / wall time over `--idle-seconds`.
- peer: APScheduler 3 AsyncIOScheduler with the same jobs; its lateness is the job's
  start minus its scheduled time (it has no database and no bus). Skipped when it is not
  installed (.venv/bin/pip install "apscheduler>=3.10,<4").

Run: .venv/bin/python bench/scheduler.py [--seconds 20] [--idle-seconds 20] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agentrunner.adapters.bus.memory import InMemoryEventBus
from agentrunner.adapters.config.files import load_agent_directory
from agentrunner.adapters.providers.catalog import SettingsProviderCatalog
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.domain.event import Event
from agentrunner.domain.schedule import OverlapPolicy, Schedule, ScheduleSource
from agentrunner.logs import configure_logging
from agentrunner.runtime.outbox import OutboxRelay
from agentrunner.runtime.registry import AgentRegistry
from agentrunner.runtime.schedule_watch import FireWatch
from agentrunner.runtime.scheduler import Scheduler
from agentrunner.runtime.topics import SCHEDULED_TASKS
from agentrunner.settings import Settings

AGENT = "name: bench\nagent_type: t\nexecution_mode: scheduled\nllm_config: {provider: echo, model: echo}\n"
AGENT += "schedule_config: {type: cron, cron: '0 0 1 1 *'}\n"


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] if ordered else float("nan")


@asynccontextmanager
async def _scheduler(database_url: str, folder: Path) -> AsyncIterator[tuple[Scheduler, InMemoryEventBus]]:
    (folder / "agents").mkdir(exist_ok=True)
    (folder / "agents" / "bench.yml").write_text(AGENT)
    settings = Settings(_env_file=None, agents_dir=folder / "agents")
    registry = AgentRegistry()
    directory = load_agent_directory(settings.agents_dir)
    catalog = SettingsProviderCatalog(settings)
    registry.replace_all(list(directory.documents), list(directory.broken), catalog)
    store = SQLStateStore(database_url)
    bus = InMemoryEventBus()
    await store.start()
    await bus.start()
    relay = OutboxRelay(bus=bus, store=store)
    scheduler = Scheduler(store=store, relay=relay, registry=registry, refresh_seconds=2.0)
    watch = FireWatch(executions=store, schedules=store, bus=bus, deliver=scheduler.deliver)
    await watch.start()
    try:
        yield scheduler, bus
    finally:
        await watch.stop()
        await scheduler.stop()
        await bus.close()
        await catalog.close()
        await store.close()


async def _load(scheduler: Scheduler, schedules: list[Schedule]) -> None:
    # As ad-hoc (API) schedules: the scheduler keeps config schedules equal to its agent files.
    for start in range(0, len(schedules), 50):
        await asyncio.gather(*(scheduler.store.create_schedule(s) for s in schedules[start : start + 50]))


def _spread(count: int, interval: float, *, burst: bool, now: datetime) -> list[Schedule]:
    base = now.replace(microsecond=0) + timedelta(seconds=3)
    return [
        Schedule(
            id=f"bench-{index}",
            agent="bench",
            interval_seconds=interval,
            start_at=base if burst else base + timedelta(seconds=interval * index / count),
            overlap_policy=OverlapPolicy.ALLOW,
            source=ScheduleSource.API,
            created_at=now,
            updated_at=now,
        )
        for index in range(count)
    ]


async def lateness(database_url: str, folder: Path, *, burst: bool, seconds: float) -> list[float]:
    """Seconds between each tick and its `scheduled.tasks` event reaching the bus."""
    late: list[float] = []

    async def arrived(event: Event) -> None:
        scheduled = datetime.fromisoformat(event.payload["scheduled_time"])
        late.append((datetime.now(UTC) - scheduled).total_seconds())

    async with _scheduler(database_url, folder) as (scheduler, bus):
        await bus.subscribe("bench.scheduled", [SCHEDULED_TASKS], arrived, prefetch=1000)
        now = datetime.now(UTC)
        await _load(scheduler, _spread(1000, 5.0 if burst else 10.0, burst=burst, now=now))
        await scheduler.start()
        await asyncio.sleep(3 + seconds)
    return late


async def idle_cpu(database_url: str, folder: Path, *, seconds: float) -> tuple[float, float]:
    """CPU % of this process with 10,000 schedules loaded and none due; load time (s)."""
    async with _scheduler(database_url, folder) as (scheduler, _):
        now = datetime.now(UTC)
        yearly = [
            Schedule(id=f"idle-{i}", agent="bench", cron="0 0 1 1 *", source=ScheduleSource.API) for i in range(10_000)
        ]
        started = time.perf_counter()
        await _load(scheduler, [s.model_copy(update={"created_at": now, "updated_at": now}) for s in yearly])
        await scheduler.start()
        await asyncio.sleep(3)  # the first refresh reads all 10,000
        loaded = time.perf_counter() - started
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        return 100 * (time.process_time() - cpu) / (time.perf_counter() - wall), loaded


async def apscheduler_peer(*, burst: bool, seconds: float, idle_seconds: float) -> tuple[list[float], float] | None:
    """APScheduler 3: the same 1,000 interval jobs (lateness), then 10,000 idle cron jobs (CPU %)."""
    try:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler  # noqa: PLC0415
        from apscheduler.triggers.cron import CronTrigger  # noqa: PLC0415
        from apscheduler.triggers.interval import IntervalTrigger  # noqa: PLC0415
    except ImportError:
        return None
    late: list[float] = []
    interval = 5.0 if burst else 10.0
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)

    async def job(start: datetime) -> None:
        now = datetime.now(UTC)
        ticks = int((now - start).total_seconds() // interval)
        late.append((now - (start + timedelta(seconds=ticks * interval))).total_seconds())

    peer = AsyncIOScheduler(timezone=UTC)
    for index in range(1000):
        start = base if burst else base + timedelta(seconds=interval * index / 1000)
        trigger = IntervalTrigger(seconds=interval, start_date=start, timezone=UTC)
        peer.add_job(job, trigger, args=[start], misfire_grace_time=60, max_instances=10)
    peer.start()
    await asyncio.sleep(3 + seconds)
    peer.shutdown(wait=False)
    idle = AsyncIOScheduler(timezone=UTC)
    for _ in range(10_000):
        idle.add_job(job, CronTrigger.from_crontab("0 0 1 1 *", timezone=UTC), args=[base])
    idle.start()
    await asyncio.sleep(3)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.sleep(idle_seconds)
    share = 100 * (time.process_time() - cpu) / (time.perf_counter() - wall)
    idle.shutdown(wait=False)
    return late, share


def _row(name: str, late: list[float]) -> str:
    if not late:
        return f"| {name} | 0 | - | - | - |"
    ms = [value * 1000 for value in late]
    return f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {_percentile(ms, 0.99):.1f} | {max(ms):.1f} |"


async def main(args: argparse.Namespace) -> None:
    configure_logging("bench", "WARNING")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)

        def url(name: str) -> str:
            return args.database_url or f"sqlite+aiosqlite:///{folder / name}.db"

        backend = "PostgreSQL" if args.database_url else "SQLite (embedded)"
        spread = await lateness(url("spread"), folder, burst=False, seconds=args.seconds)
        burst = await lateness(url("burst"), folder, burst=True, seconds=args.seconds) if not args.database_url else []
        cpu, loaded = await idle_cpu(url("idle"), folder, seconds=args.idle_seconds)
        peer_spread = await apscheduler_peer(burst=False, seconds=args.seconds, idle_seconds=args.idle_seconds)
        peer_burst = await apscheduler_peer(burst=True, seconds=args.seconds, idle_seconds=1) if peer_spread else None

    print(f"\nScheduler, 1,000 schedules for {args.seconds:g} s, database: {backend}, bus: in memory\n")
    print("| setup | fires | lateness p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    print(_row("agentrunner, 100 fires/s (spread)", spread))
    if burst:
        print(_row("agentrunner, 1,000 at once every 5 s", burst))
    if peer_spread and peer_burst:
        print(_row("APScheduler 3, 100 fires/s (spread)", peer_spread[0]))
        print(_row("APScheduler 3, 1,000 at once every 5 s", peer_burst[0]))
    print(f"\nIdle, 10,000 schedules loaded, over {args.idle_seconds:g} s\n")
    print("| setup | CPU % |")
    print("|---|---|")
    print(f"| agentrunner scheduler + watch ({loaded:.0f} s to create them one by one) | {cpu:.2f} |")
    if peer_spread:
        print(f"| APScheduler 3 | {peer_spread[1]:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--idle-seconds", type=float, default=20)
    parser.add_argument("--database-url", default="", help="A scratch PostgreSQL database (default: SQLite)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
