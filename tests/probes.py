"""The tests' probes of what they started: one TLS context for every request in a loop.

httpx makes a TLS context per `httpx.get` (loading the CA bundle: 30 ms of CPU, plain HTTP
too), and a wait that polled five roles every 50 ms spent a core on it while the processes
it waited for were starting. Making TLS contexts was a quarter of the test processes' CPU
over the suite (py-spy), most of it in such waits."""

from __future__ import annotations

import httpx

from agentrunner.liveness import probe_tls

__all__ = ["probe_tls", "ready"]


def ready(url: str, *, timeout: float = 1.0) -> bool:
    """True when `url`/health/ready answers 200 within `timeout` seconds."""
    try:
        return httpx.get(f"{url}/health/ready", timeout=timeout, verify=probe_tls()).status_code == 200
    except httpx.HTTPError:
        return False
