"""Free TCP ports for the tests' servers, that nothing else can take between the pick and the bind.

A port the kernel hands out for `bind(0)` comes from its ephemeral range (32768-60999
here), the range every outgoing connection's local end comes from too: between the pick and
the server's own bind, a connection of another test process to PostgreSQL or RabbitMQ can
take it ("Address already in use" in a CI run with two test processes). Ports are picked
instead below that range, from a slice of 10000-19999 of each pytest-xdist process's own,
in turn, each checked free by binding it: no outgoing connection takes one, no other test
process picks one, and a port just used is not picked again before the slice wraps.
`scripts/private_services.sh` picks its services' ports from 20000-31999.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import threading

FIRST, END = 10000, 20000


def _slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # "gw3"
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    size = (END - FIRST) // count
    return range(FIRST + index % count * size, FIRST + (index % count + 1) * size)


_PORTS = _slice()
_next = itertools.count(random.randrange(len(_PORTS)))  # in turn, from a random start
_lock = threading.Lock()


def free_port() -> int:
    """A loopback TCP port nothing listens on right now, and that no other test process picks."""
    with _lock:
        for _ in range(len(_PORTS)):
            port = _PORTS[next(_next) % len(_PORTS)]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free port in {_PORTS.start}-{_PORTS.stop - 1}")
