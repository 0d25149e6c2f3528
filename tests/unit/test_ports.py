"""The tests' free ports: outside the kernel's ephemeral range, a slice per test process."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests import ports


def test_slices_of_the_test_processes_are_disjoint_and_below_the_ephemeral_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for count in (1, 2, 3, 4):
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(count))
        taken: set[int] = set()
        for index in range(count):
            monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{index}")
            ports_of_one = set(ports._slice())
            assert ports_of_one
            assert not ports_of_one & taken
            assert max(ports_of_one) < min(ephemeral_start, 20000)  # private_services.sh: 20000+
            taken |= ports_of_one


def test_a_port_listened_on_is_never_handed_out() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", ports.free_port()))
        held.listen()
        taken = held.getsockname()[1]
        handed = {ports.free_port() for _ in range(len(ports._PORTS))}
    assert taken not in handed
    assert len(handed) > len(ports._PORTS) // 2
