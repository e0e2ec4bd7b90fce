"""Round robin over the candidate endpoints of each pool."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from extproc.policies.base import Picker
from extproc.registry.base import Endpoint


class RoundRobin(Picker):
    name = "round_robin"
    max_pools = 4096

    def __init__(self) -> None:
        self._next: dict[Hashable, int] = {}

    def pick(self, key: Hashable, candidates: Sequence[Endpoint], n: int) -> list[Endpoint]:
        size = len(candidates)
        if size == 0:
            return []
        nxt = self._next
        start = nxt.get(key, 0) % size
        if len(nxt) >= self.max_pools and key not in nxt:
            nxt.clear()  # client-chosen requirements make pools unbounded: forget, restart
        nxt[key] = start + 1
        count = min(n, size)
        return [candidates[(start + i) % size] for i in range(count)]

    def __repr__(self) -> str:
        return f"RoundRobin(pools={len(self._next)})"
