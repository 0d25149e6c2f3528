"""`python standin_role.py DIR PORT`: a stand-in for a role process under the supervisor of
`cluster up` (tests/integration/test_supervisor.py), starting in a fraction of the time a
real role takes. What it does is read from DIR when it starts, so a test can change what
the *next* start does:

- DIR/fail exists: exit 3 at once (a role that cannot start); when it holds a number, only
  that many more starts fail;
- DIR/hang exists: ignore SIGTERM and never answer (a restart the stop must not leave behind);
- DIR/slow exists: never answer, exit on SIGTERM (a role still starting);
- otherwise: answer GET /health/ready with 200 on PORT until SIGTERM, then exit 0.

Each start leaves DIR/started.PID; a hanging one DIR/hanging.PID once SIGTERM is ignored.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


class Ready(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health/ready" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def main(folder: Path, port: int) -> int:
    (folder / f"started.{os.getpid()}").touch()
    fail = folder / "fail"
    if fail.exists():
        left = fail.read_text().strip()
        if not left:
            return 3
        if int(left) > 0:
            fail.write_text(str(int(left) - 1))
            return 3
    if (folder / "hang").exists():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        (folder / f"hanging.{os.getpid()}").touch()
        while True:
            time.sleep(60)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    if (folder / "slow").exists():
        stopped.wait()
        return 0
    server = HTTPServer(("127.0.0.1", port), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopped.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2])))
