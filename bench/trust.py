"""What the trust boundaries add to one invocation (issue 19): the same trivial agent
(provider `echo`) called on a platform with API auth off and on one with auth on, two
tenants and an admin (`API_KEYS=team-a:...,team-b:...`, `ADMIN_API_KEYS`), called
alternately, one at a time, over HTTP.

With auth on, a call passes every check the platform makes for a stranger: the key
(constant-time, every key compared), its tenant and role, the per-key rate limit (set high
enough never to refuse here, so its bookkeeping is measured, not its refusals), the host
header, the body and task_data size limits, and the tenant recorded and checked on the
execution it creates and reads back.

Setups: embedded (two `agentrunner up` processes, SQLite), then distributed (an
orchestrator of each kind over one scratch PostgreSQL database, RabbitMQ and Redis, and one
autonomous worker between them). Target (issue 19): added p50 under 0.5 ms.

Run: .venv/bin/python bench/trust.py [--calls 600]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench.*, tests.*

from bench.guardrails import Call, alternate, measured_setups
from bench.invoke import Processes, delete_broker_names, delete_redis_keys, free_port, percentile, wait_ready
from bench.slack_ack import postgres_database
from tests.contract.conftest import RABBITMQ_URL, REDIS_URL
from tests.e2e.platform import start_platform
from tests.security.conftest import TEAM_A_KEY, TENANTS_ENV

AGENT = "name: bench-plain\nagent_type: bench\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"
# Auth on, every check in place; the rate limit high enough to count without refusing.
GUARDED_ENV = {**TENANTS_ENV, "API_RATE_LIMIT_PER_MINUTE": "10000000"}


def calls(open_url: str, guarded_url: str) -> dict[str, Call]:
    return {
        "open": Call(open_url, "bench-plain"),
        "tenant": Call(guarded_url, "bench-plain", headers={"x-api-key": TEAM_A_KEY}),
    }


def workdir_with_agent(root: Path, name: str) -> Path:
    workdir = root / name
    (workdir / "agents").mkdir(parents=True)
    (workdir / "agents" / "bench-plain.yml").write_text(AGENT)
    return workdir


def embedded(count: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        quiet = {"LOG_LEVEL": "WARNING"}
        open_platform = start_platform(workdir_with_agent(root, "open"), quiet)
        try:
            guarded = start_platform(workdir_with_agent(root, "guarded"), quiet | GUARDED_ENV)
            try:
                urls = (open_platform.url("orchestrator"), guarded.url("orchestrator"))
                return asyncio.run(alternate(calls(*urls), count))
            finally:
                guarded.stop()
        finally:
            open_platform.stop()


def distributed(count: int) -> dict[str, list[float]]:
    run = uuid.uuid4().hex[:8]
    prefix = f"agentrunner-bench-{run}"
    database_url, drop = postgres_database()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            workdir = workdir_with_agent(Path(scratch), "agents-root")
            env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
            env.update(
                {
                    "DATABASE_URL": database_url,
                    "RABBITMQ_URL": RABBITMQ_URL,
                    "RABBITMQ_EXCHANGE_PREFIX": prefix,
                    "REDIS_URL": REDIS_URL,
                    "REDIS_KEY_PREFIX": f"{prefix}:",
                    "AGENTS_DIR": str(workdir / "agents"),
                    "DATA_DIR": str(workdir / "data"),
                    "LOG_LEVEL": "WARNING",
                }
            )
            ports = {"open": free_port(), "guarded": free_port(), "worker": free_port()}
            processes = Processes(workdir)
            cli = [sys.executable, "-m", "agentrunner", "serve"]
            try:
                processes.spawn("open", [*cli, "orchestrator"], env | {"ORCHESTRATOR_PORT": str(ports["open"])})
                guarded_env = env | GUARDED_ENV | {"ORCHESTRATOR_PORT": str(ports["guarded"])}
                processes.spawn("guarded", [*cli, "orchestrator"], guarded_env)
                worker = [*cli, "autonomous", "--health-port", str(ports["worker"])]
                processes.spawn("worker", worker, env | GUARDED_ENV)
                urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}

                async def ready() -> None:
                    async with httpx.AsyncClient(headers={"x-api-key": TEAM_A_KEY}) as http:
                        await wait_ready(http, processes, urls)

                asyncio.run(ready())
                return asyncio.run(alternate(calls(urls["open"], urls["guarded"]), count))
            finally:
                processes.stop()
                asyncio.run(delete_broker_names(RABBITMQ_URL, [f"{prefix}."], [f"{prefix}.events"]))
                asyncio.run(delete_redis_keys(REDIS_URL, [f"{prefix}:"]))
    finally:
        drop()


def main() -> None:
    results = measured_setups("Trust checks", 600, __doc__, {"embedded": embedded, "distributed": distributed})
    for setup, latencies in results.items():
        open_figures = [percentile(latencies["open"], p) for p in (50, 99)]
        tenant = [percentile(latencies["tenant"], p) for p in (50, 99)]
        added = [t - o for t, o in zip(tenant, open_figures, strict=True)]
        print(f"| {setup} | auth off | {open_figures[0]:.2f} | {open_figures[1]:.2f} | | |")
        figures = f"{tenant[0]:.2f} | {tenant[1]:.2f} | **{added[0]:.2f}** | {added[1]:.2f}"
        print(f"| {setup} | team-a, every check | {figures} |")


if __name__ == "__main__":
    main()
