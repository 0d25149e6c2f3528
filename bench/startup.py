"""How long `agentrunner up` takes to answer /health/ready on every role, with the
repository's agents, split into interpreter + imports and our own start-up work.

Run: .venv/bin/python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROLES = ("state", "config", "orchestrator", "scheduler", "slack")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def one_run(agents_dir: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as workdir:
        ports = {role: free_port() for role in ROLES}
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        env.update({f"{role.upper()}_PORT": str(port) for role, port in ports.items()})
        env.update({"AGENTS_DIR": str(agents_dir), "DATA_DIR": workdir})
        log_path = Path(workdir) / "log"
        started = time.perf_counter()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "agentrunner", "up"], env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT
            )
        pending = set(ports.values())
        while pending:
            pending = {port for port in pending if not ready(port)}
            if time.perf_counter() - started > 30:
                raise RuntimeError(log_path.read_text())
            time.sleep(0.005)
        total = time.perf_counter() - started
        process.terminate()
        process.wait(30)
        records = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        node = next(r for r in records if r["message"] == "node started")
        return {
            "total_ms": total * 1000,
            "node_start_ms": float(node["metadata"]["startup_ms"]),
            "agents": node["metadata"]["agents"],
        }


def import_ms() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import agentrunner.cli, agentrunner.node"], check=True)
    return (time.perf_counter() - started) * 1000


def bare_python_ms() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--agents", type=Path, default=REPO / "config" / "agents")
    args = parser.parse_args()
    runs = [one_run(args.agents) for _ in range(args.runs)]
    imports = [import_ms() for _ in range(args.runs)]
    bare = [bare_python_ms() for _ in range(args.runs)]
    rows = [
        ("process start -> all 5 roles ready", statistics.median(r["total_ms"] for r in runs)),
        ("  python interpreter alone", statistics.median(bare)),
        ("  python + importing agentrunner and its libraries", statistics.median(imports)),
        (
            "  node start (db, bus, load + validate agents, consumers)",
            statistics.median(r["node_start_ms"] for r in runs),
        ),
    ]
    print(f"agentrunner up, {runs[0]['agents']} agents, median of {args.runs} runs")
    print(f"{'phase':60} {'ms':>8}")
    for label, value in rows:
        print(f"{label:60} {value:8.1f}")


if __name__ == "__main__":
    main()
