"""Query latency over a large history (issue 23, point 3): 1,000,000 executions over 5
tenants, 40 agents and every end status spread across 90 days, and 100,000 sessions, in a
scratch PostgreSQL database; then `agentrunner serve orchestrator state` on it and p50/p99
of `GET /executions` (filtered by agent, status, tenant and their combinations, paged deep
with the cursor it hands out), `GET /usage` over a month, the dashboard's other lists and
its overview's aggregates (`/stats/*`), over real HTTP, one request at a time.

`--baseline SRC` serves the same database first with another checkout's code (e.g.
/work/main/src) at the schema that code knows (`agentrunner db upgrade` of that checkout),
then upgrades it with this checkout and measures again: before and after in one run, on
one machine, under the same load. The agent-count half of point 3 is bench/scale_agents.py.

The database is created and dropped by this run (`--keep` leaves it, `--reuse NAME` takes
one a previous `--keep` left; nothing else is touched).

Run: .venv/bin/python bench/scale.py [--executions 1000000] [--sessions 100000] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import httpx
from bench.invoke import Processes, delete_broker_names, free_port, percentile, wait_ready

REPO = Path(__file__).resolve().parent.parent
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
AGENTS = 40
DAYS = 90
# Keys of 32+ characters; the admin key acts across tenants (no tenant filter).
KEYS = {tenant: f"{tenant}-bench-key-{'x' * 32}" for tenant in TENANTS}
ADMIN_KEY = f"admin-bench-key-{'y' * 32}"
LOAD_TIMEOUT = 600.0

# The distribution, in SQL over `i` (1..N) and `r` (a random number per row): tenants
# weighted 50/25/15/7/3 %, agents skewed (agent-0 the busiest), statuses as a production
# history looks (mostly succeeded, a few failed, rare waits), creation spread evenly over
# DAYS days back from now, newest last.
_FILL = f"""
INSERT INTO executions (
    execution_id, agent, status, input, session_id, output, error, input_tokens, output_tokens,
    cost_usd, attempts, provider, model, worker, tenant, chain_depth, trace_id,
    created_at, started_at, finished_at)
SELECT
    md5(i::text),
    'agent-' || (floor(power(random(), 2) * {AGENTS}))::int,
    s.status,
    '{{"prompt": "summarise the ticket and propose a reply"}}'::json,
    CASE WHEN i % 3 = 0 THEN 'session-' || (i % $4) END,
    CASE WHEN s.status = 'succeeded' THEN 'A short answer of a few words, as agents give.' END,
    CASE WHEN s.status IN ('failed', 'timed_out')
         THEN '{{"code": "provider_error", "message": "the provider answered 500"}}'::json END,
    (100 + i % 900), (20 + i % 300), round(((100 + i % 900) * 0.000003 + (20 + i % 300) * 0.000015)::numeric, 8),
    1, 'openai', 'gpt-4o-mini', 'worker-' || (i % 7),
    CASE WHEN t.r < 0.50 THEN '{TENANTS[0]}' WHEN t.r < 0.75 THEN '{TENANTS[1]}'
         WHEN t.r < 0.90 THEN '{TENANTS[2]}' WHEN t.r < 0.97 THEN '{TENANTS[3]}' ELSE '{TENANTS[4]}' END,
    0, md5(i::text),
    c.at, c.at + interval '40 ms', CASE WHEN s.status NOT IN ('queued', 'running', 'waiting_approval')
                                        THEN c.at + interval '900 ms' END
FROM generate_series($1::int, $2::int) AS i,
LATERAL (SELECT random() AS r, random() AS q, i AS j) AS t,
LATERAL (SELECT now() - interval '{DAYS} days' * (1 - t.j::float / $3::int) AS at) AS c,
LATERAL (SELECT CASE WHEN t.q < 0.90 THEN 'succeeded' WHEN t.q < 0.96 THEN 'failed'
                     WHEN t.q < 0.98 THEN 'timed_out' WHEN t.q < 0.9995 THEN 'cancelled'
                     WHEN t.q < 0.9998 THEN 'waiting_approval' WHEN t.q < 0.9999 THEN 'running'
                     ELSE 'queued' END AS status) AS s
"""

_SESSIONS = f"""
INSERT INTO agent_state (agent, tenant, session_id, payload, version, updated_at)
SELECT 'agent-' || (i % {AGENTS}), (ARRAY{list(TENANTS)})[1 + i % {len(TENANTS)}], 'session-' || i,
       convert_to('{{"history": [{{"role": "user", "content": "hello"}}], "memory": {{}}}}', 'UTF8'),
       1 + i % 5, now() - interval '1 minute' * i
FROM generate_series(1, $1) AS i
"""


@dataclass(frozen=True)
class Query:
    name: str
    role: str  # "orchestrator" or "state"
    path: str
    key: str


def queries(month_ago: str, now: str) -> list[Query]:
    acme, hooli = KEYS["acme"], KEYS["hooli"]
    usage = f"since={month_ago}&until={now}"
    return [
        Query("list, admin, no filter", "orchestrator", "/executions?limit=50", ADMIN_KEY),
        Query("list, admin, agent (busy)", "orchestrator", "/executions?agent=agent-0&limit=50", ADMIN_KEY),
        Query("list, admin, agent (rare)", "orchestrator", "/executions?agent=agent-39&limit=50", ADMIN_KEY),
        Query("list, admin, status failed", "orchestrator", "/executions?status=failed&limit=50", ADMIN_KEY),
        Query("list, admin, status queued", "orchestrator", "/executions?status=queued&limit=50", ADMIN_KEY),
        Query("list, admin, agent+status", "orchestrator", "/executions?agent=agent-39&status=failed", ADMIN_KEY),
        Query("list, tenant (50 %)", "orchestrator", "/executions?limit=50", acme),
        Query("list, tenant (3 %)", "orchestrator", "/executions?limit=50", hooli),
        Query("list, tenant (3 %) + agent (rare)", "orchestrator", "/executions?agent=agent-39", hooli),
        Query("list, tenant (3 %) + status failed", "orchestrator", "/executions?status=failed", hooli),
        Query(
            "list, tenant (3 %) + agent + status", "orchestrator", "/executions?agent=agent-39&status=timed_out", hooli
        ),
        Query("list, tenant, 500 a page", "orchestrator", "/executions?limit=500", acme),
        Query("usage, admin, a month", "state", f"/usage?{usage}", ADMIN_KEY),
        Query("usage, tenant (50 %), a month", "state", f"/usage?{usage}", acme),
        Query("usage, tenant (3 %), a month", "state", f"/usage?{usage}", hooli),
        Query("usage, tenant, one agent, a month", "state", f"/usage?agent=agent-0&{usage}", acme),
        Query("usage, admin, all time", "state", "/usage", ADMIN_KEY),
        Query("dashboard: agents", "orchestrator", "/agents", acme),
        Query("dashboard: plan runs", "orchestrator", "/plan-runs?limit=50", acme),
        Query("dashboard: dead letters", "orchestrator", "/dead-letters?limit=50", ADMIN_KEY),
        Query("dashboard: schedules", "orchestrator", "/schedules?limit=50", acme),
        *overview_queries(acme),
    ]


def overview_queries(acme: str) -> list[Query]:
    """The dashboard's overview (issue 24): executions per bucket, and cost per day."""
    executions = "/stats/executions"
    return [
        Query("overview: admin, an hour by minute", "orchestrator", f"{executions}?window=3600&bucket=60", ADMIN_KEY),
        Query(
            "overview: tenant (50 %), a day by 15 min", "orchestrator", f"{executions}?window=86400&bucket=900", acme
        ),
        Query("overview: admin, a day by minute", "orchestrator", f"{executions}?window=86400&bucket=60", ADMIN_KEY),
        Query("overview: admin, 7 days by hour", "orchestrator", f"{executions}?window=604800&bucket=3600", ADMIN_KEY),
        Query(
            "overview: tenant (50 %), 7 days by hour", "orchestrator", f"{executions}?window=604800&bucket=3600", acme
        ),
        Query("overview: cost, admin, 14 days", "orchestrator", "/stats/cost?days=14", ADMIN_KEY),
        Query("overview: cost, tenant (50 %), 31 days", "orchestrator", "/stats/cost?days=31", acme),
    ]


async def fill(dsn: str, executions: int, sessions: int) -> float:
    started = time.perf_counter()
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        # A batch per statement keeps each transaction's memory bounded.
        batch = 250_000
        for first in range(0, executions, batch):
            count = min(batch, executions - first)
            await connection.execute(_FILL, first + 1, first + count, executions, max(1, sessions))
        await connection.execute(_SESSIONS, sessions)
        await connection.execute("VACUUM ANALYZE executions")
        await connection.execute("VACUUM ANALYZE agent_state")
    finally:
        await connection.close()
    return time.perf_counter() - started


async def measure(urls: dict[str, str], plan: list[Query], requests: int) -> dict[str, tuple[float, float, int]]:
    """p50, p99 (ms) and the answer's size of each query, `requests` times one after another."""
    results: dict[str, tuple[float, float, int]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(60)) as http:
        for query in plan:
            headers = {"authorization": f"Bearer {query.key}"}
            url = urls[query.role] + query.path
            latencies: list[float] = []
            size = 0
            for n in range(requests + 5):  # 5 warm-up requests
                started = time.perf_counter()
                async with http.get(url, headers=headers) as response:
                    body = await response.read()
                elapsed = time.perf_counter() - started
                if response.status != 200:
                    raise RuntimeError(f"{query.name}: {url} answered {response.status}: {body[:300]!r}")
                if n >= 5:
                    latencies.append(elapsed)
                size = len(body)
            results[query.name] = (percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000, size)
    return results


async def deep_pages(url: str, key: str, pages: int) -> tuple[float, float]:
    """p50/p99 (ms) of each page while following `next_cursor` `pages` pages deep."""
    latencies: list[float] = []
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=60) as http:
        cursor: str | None = None
        for _ in range(pages):
            params = {"limit": "50"} | ({"cursor": cursor} if cursor else {})
            started = time.perf_counter()
            answer = await http.get(f"{url}/executions", params=params)
            latencies.append(time.perf_counter() - started)
            answer.raise_for_status()
            cursor = answer.json()["next_cursor"]
            if cursor is None:
                break
    return percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000


async def upgrade(env: dict[str, str], workdir: Path) -> None:
    """`agentrunner db upgrade` with the code `env` names."""
    migrated = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agentrunner", "db", "upgrade"],
        env=env,
        cwd=workdir,
        capture_output=True,
        timeout=LOAD_TIMEOUT,
        check=False,
    )
    if migrated.returncode != 0:
        raise RuntimeError(f"db upgrade failed:\n{migrated.stdout.decode()}{migrated.stderr.decode()}")


async def serve_and_measure(
    label: str, src: Path, env: dict[str, str], workdir: Path, requests: int, pages: int
) -> dict[str, tuple[float, float, int]]:
    """`db upgrade` then `serve orchestrator state` with the code under `src`, measured."""
    env = env | {"PYTHONPATH": f"{src}:{REPO}"}
    cli = [sys.executable, "-m", "agentrunner"]
    await upgrade(env, workdir)
    processes = Processes(workdir)
    urls = {role: f"http://127.0.0.1:{env[f'{role.upper()}_PORT']}" for role in ("orchestrator", "state")}
    try:
        processes.spawn(f"serve-{label}", [*cli, "serve", "orchestrator", "state"], env)
        async with httpx.AsyncClient() as http:
            await wait_ready(http, processes, {f"serve-{label}": urls["orchestrator"]})
            await wait_ready(http, processes, {f"serve-{label}": urls["state"]})
        now = time.time()
        month_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 30 * 86400))
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        results = await measure(urls, queries(month_ago, until), requests)
        p50, p99 = await deep_pages(urls["orchestrator"], KEYS["acme"], pages)
        results[f"list, tenant, {pages} pages deep by cursor"] = (p50, p99, 0)
        return results
    finally:
        processes.stop()


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per query")
    parser.add_argument("--pages", type=int, default=200, help="pages followed by cursor")
    parser.add_argument("--baseline", type=Path, help="src directory of the code to measure first")
    parser.add_argument("--postgres", default="postgresql://postgres:postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rabbitmq", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--keep", action="store_true", help="leave the database (its name is printed)")
    parser.add_argument("--reuse", help="a database a previous --keep left, filled")
    args = parser.parse_args()

    base = args.postgres.rsplit("/", 1)[0]
    database = args.reuse or f"agentrunner_scale_{uuid.uuid4().hex[:8]}"
    if not args.reuse:
        admin = await asyncpg.connect(args.postgres, timeout=10)
        try:
            await admin.execute(f'CREATE DATABASE "{database}"')
        finally:
            await admin.close()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            (workdir / "agents").mkdir()
            env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
            env |= {
                "DATABASE_URL": f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{database}",
                "RABBITMQ_URL": args.rabbitmq,
                "RABBITMQ_EXCHANGE_PREFIX": f"agentrunner-bench-{database}",
                "REDIS_URL": "",
                "AGENTS_DIR": str(workdir / "agents"),
                "DATA_DIR": str(workdir / "data"),
                "LOG_LEVEL": "WARNING",
                "API_KEYS": ",".join(f"{tenant}:{key}" for tenant, key in KEYS.items()),
                "ADMIN_API_KEYS": f"ops:{ADMIN_KEY}",
                "ENABLE_API_AUTH": "true",
                "API_RATE_LIMIT_PER_MINUTE": "0",
                "ORCHESTRATOR_PORT": str(free_port()),
                "STATE_PORT": str(free_port()),
            }
            first = args.baseline or REPO / "src"
            if not args.reuse:
                await upgrade(env | {"PYTHONPATH": f"{first}:{REPO}"}, workdir)
                print(f"load before filling: {loadavg()}", flush=True)
                seconds = await fill(f"{base}/{database}", args.executions, args.sessions)
                print(f"filled {args.executions} executions, {args.sessions} sessions in {seconds:.0f} s", flush=True)
            runs: dict[str, dict[str, tuple[float, float, int]]] = {}
            if args.baseline:
                print(f"load before baseline: {loadavg()}", flush=True)
                runs["baseline"] = await serve_and_measure(
                    "baseline", args.baseline, env, workdir, args.requests, args.pages
                )
            print(f"load before this checkout: {loadavg()}", flush=True)
            runs["this"] = await serve_and_measure("this", REPO / "src", env, workdir, args.requests, args.pages)
            print(f"load after: {loadavg()}", flush=True)
            print_table(runs)
    finally:
        prefix = f"agentrunner-bench-{database}"
        left = await delete_broker_names(args.rabbitmq, [f"{prefix}."], [f"{prefix}.events"])
        if left:
            print(f"left on the broker: {left}")
        if not args.keep:
            admin = await asyncpg.connect(args.postgres, timeout=10)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await admin.close()
        else:
            print(f"kept database {database}")


def print_table(runs: dict[str, dict[str, tuple[float, float, int]]]) -> None:
    names = list(next(iter(runs.values())))
    header = "| query | " + " | ".join(f"{run} p50 ms | {run} p99 ms" for run in runs) + " | bytes |"
    print(header)
    print("|" + "---|" * (2 + 2 * len(runs)))
    for name in names:
        cells = " | ".join(f"{runs[run][name][0]:.1f} | {runs[run][name][1]:.1f}" for run in runs)
        print(f"| {name} | {cells} | {runs['this'][name][2]} |")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
