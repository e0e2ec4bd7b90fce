"""``PORTS`` on real loopback sockets: what it hands out is free, consecutive when asked,
and never handed out again in this process."""

from __future__ import annotations

import socket

import pytest

from extproc.ops.procs import PORTS

pytestmark = pytest.mark.integration


def test_ports_are_free_distinct_and_runs_consecutive() -> None:
    taken: list[int] = []
    for n in (1, 2, 4):
        run = PORTS.take(n, consecutive=True)
        assert run == list(range(run[0], run[0] + n))
        taken += run
        taken += PORTS.take(n)
    assert len(set(taken)) == len(taken)  # never the same port twice
    for port in taken:  # and each one can be bound now
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))
            s.listen()


def test_a_port_in_use_is_not_handed_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        assert busy not in {p for _ in range(50) for p in PORTS.take(2, consecutive=True)}
