"""``PortAllocator``'s bookkeeping, on a scripted port table (no sockets; the real probe is
exercised in ``tests/integration/test_ports.py``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from extproc.ops.procs import PortAllocator


class Scripted(PortAllocator):
    """The random draw answers the next of ``offers``; ``bind(p)`` fails for ``busy`` ports."""

    def __init__(self, offers: Iterable[int], busy: Iterable[int] = (), attempts: int = 10) -> None:
        super().__init__(attempts=attempts)
        self.offers = iter(offers)
        self.busy = set(busy)

    def _random_free(self, span: int = 1) -> int | None:
        return next(self.offers)

    def _probe(self, port: int = 0) -> int | None:
        return None if port in self.busy else port


def test_ports_come_from_outside_the_ephemeral_range() -> None:
    """Outgoing connections take their local port from the ephemeral range; a port handed
    out from it could be taken before the child binds it."""
    low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    allocator = PortAllocator()
    pool = allocator._ports()
    assert pool.stop <= low or pool.start > high
    for port in [*allocator.take(20), *allocator.take(5, consecutive=True)]:
        assert port in pool and not low <= port <= high


def test_a_port_is_never_handed_out_twice() -> None:
    ports = Scripted([5000, 5000, 5000, 5001])
    assert ports.take() == [5000]
    assert ports.take() == [5001]  # the kernel offered 5000 again: skipped


def test_ports_taken_together_are_distinct() -> None:
    assert Scripted([5000, 5000, 5001, 5000, 5002]).take(3) == [5000, 5001, 5002]


def test_runs_are_consecutive_and_never_overlap_earlier_ones() -> None:
    ports = Scripted([6000, 5999, 6001, 7000])
    assert ports.take(2, consecutive=True) == [6000, 6001]
    # 5999..6000 and 6001..6002 overlap the first run: skipped.
    assert ports.take(2, consecutive=True) == [7000, 7001]


def test_a_run_with_a_busy_port_is_skipped() -> None:
    ports = Scripted([8000, 9000], busy={8002})
    assert ports.take(3, consecutive=True) == [9000, 9001, 9002]


def test_a_run_past_the_last_port_is_skipped() -> None:
    assert Scripted([65535, 10000]).take(2, consecutive=True) == [10000, 10001]


def test_running_out_of_candidates_raises() -> None:
    ports = Scripted([4000] * 20, attempts=3)
    assert ports.take() == [4000]
    with pytest.raises(OSError, match="not handed out already"):
        ports.take()
    with pytest.raises(OSError, match="no run of 2 free ports"):
        Scripted([4000] * 20, busy={4001}, attempts=3).take(2, consecutive=True)
