"""`python standin_role.py DIR PORT`: a stand-in for a role process under the supervisor of
`cluster up` (tests/integration/test_supervisor.py), starting in a fraction of the time a
real role takes. What it does is read from DIR when it starts, so a test can change what
the *next* start does:

- DIR/fail exists: exit 3 at once (a role that cannot start); when it holds a number, only
  that many more starts fail;
- DIR/hang exists: ignore SIGTERM and never answer (a restart the stop must not leave behind);
- DIR/slow exists: never answer, exit on SIGTERM (a role still starting);
- otherwise: answer GET /health/ready and /health/live with 200 on PORT until SIGTERM,
  then exit 0; when DIR/slow-live holds a number, each /health/live answer takes that many
  seconds (read at each probe).

Each start leaves DIR/started.PID; a hanging one DIR/hanging.PID once SIGTERM is ignored.
Each /health/live answered adds a line to DIR/live.PID. A hung role that still lives is
made by the test itself: SIGSTOP.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


class Health(BaseHTTPRequestHandler):
    folder: Path

    def do_GET(self) -> None:
        if self.path == "/health/live":
            slow = self.folder / "slow-live"
            if slow.exists():
                time.sleep(float(slow.read_text()))
            with (self.folder / f"live.{os.getpid()}").open("a") as answered:
                answered.write("200\n")
        self.send_response(200 if self.path in ("/health/ready", "/health/live") else 404)
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
    Health.folder = folder
    server = HTTPServer(("127.0.0.1", port), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopped.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2])))
