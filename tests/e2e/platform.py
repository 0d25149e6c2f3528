"""Start `agentrunner up` as a user would: a subprocess on free ports, in a folder of its own."""

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

from agentrunner.supervisor import is_ready
from tests.ports import free_port

ROLES = ("state", "config", "orchestrator", "scheduler", "slack")


@dataclass
class RunningPlatform:
    """A running `agentrunner up` and where to reach it."""

    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    workdir: Path
    log_path: Path
    env: dict[str, str]

    def url(self, role: str) -> str:
        return f"http://127.0.0.1:{self.ports[role]}"

    def log_records(self) -> list[dict[str, Any]]:
        """Every JSON log line written so far (a non-JSON line fails the test)."""
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def platform_env(workdir: Path, extra: dict[str, str]) -> tuple[dict[str, str], dict[str, int]]:
    """The environment of a platform process: free ports, its own data, no inherited keys."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.endswith(("_API_KEY", "_BASE_URL", "_URL")) and not key.startswith(("AWS_", "SLACK_"))
    }
    ports = {role: free_port() for role in ROLES}
    env.update({f"{role.upper()}_PORT": str(port) for role, port in ports.items()})
    env.update({"AGENTS_DIR": str(workdir / "agents"), "DATA_DIR": str(workdir / "data"), "LOG_LEVEL": "INFO"})
    env.update(extra)
    return env, ports


def start_platform(workdir: Path, extra_env: dict[str, str], ready_timeout: float = 90.0) -> RunningPlatform:
    """Run `python -m agentrunner up` in `workdir` and wait until every role is ready (a
    deadline, not a wait: a start on a loaded 2-core machine took over 30 s)."""
    env, ports = platform_env(workdir, extra_env)
    return _launch(workdir, env, ports, ready_timeout, log_mode="wb")


@contextmanager
def platform_running(workdir: Path, extra_env: dict[str, str]) -> Iterator[RunningPlatform]:
    """`start_platform`, stopped afterwards; a stop that does not end cleanly fails the test
    with the end of the platform's log."""
    running = start_platform(workdir, extra_env)
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log_path.read_text()[-3000:]


def restart_platform(stopped: RunningPlatform, ready_timeout: float = 90.0) -> RunningPlatform:
    """`agentrunner up` again where `stopped` ran, on the same ports and data (its clients'
    URLs stay valid), its log appended to the same file."""
    assert stopped.process.poll() is not None, "stop it first"
    return _launch(stopped.workdir, stopped.env, stopped.ports, ready_timeout, log_mode="ab")


def _launch(
    workdir: Path, env: dict[str, str], ports: dict[str, int], ready_timeout: float, *, log_mode: str
) -> RunningPlatform:
    log_path = workdir / "agentrunner.log"
    with log_path.open(log_mode) as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentrunner", "up"],
            cwd=workdir,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    platform = RunningPlatform(process, ports, workdir, log_path, env)
    deadline = time.monotonic() + ready_timeout
    pending = set(ROLES)
    while pending and time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"agentrunner up exited with {process.returncode}:\n{log_path.read_text()}")
        for role in list(pending):
            if is_ready(platform.url(role)):
                pending.discard(role)
        time.sleep(0.05)
    if pending:
        platform.stop()
        raise RuntimeError(f"roles {sorted(pending)} not ready in {ready_timeout} s:\n{log_path.read_text()}")
    return platform
