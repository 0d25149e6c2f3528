"""An ASGI app served by uvicorn in a thread on a loopback port: the tests' stand-ins for a
remote server (an MCP server, an A2A agent), started and stopped from synchronous code."""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

import uvicorn

START_TIMEOUT_SECONDS = 10.0


class ThreadedServer:
    """One server at a time: `start(app)`, `stop()`, and `start` again (on the same port)."""

    def __init__(self, what: str, port: int) -> None:
        self.what = what
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, app: Any, *, lifespan: Literal["on", "off"] = "off") -> None:
        """Serve `app` and return once it takes connections (RuntimeError if it does not)."""
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan=lifespan)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the {self.what} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop it: gracefully, then at once when a client still holds a stream open."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(3)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(10)
        self._server = self._thread = None
