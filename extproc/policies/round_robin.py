"""Round robin over the candidate endpoints of each pool."""

from __future__ import annotations

from collections.abc import Sequence

from extproc.policies.base import Picker
from extproc.registry.base import Endpoint


class RoundRobin(Picker):
    name = "round_robin"

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def pick(self, key: str, candidates: Sequence[Endpoint], n: int) -> list[Endpoint]:
        size = len(candidates)
        if size == 0:
            return []
        start = self._next.get(key, 0) % size
        self._next[key] = start + 1
        count = min(n, size)
        return [candidates[(start + i) % size] for i in range(count)]

    def __repr__(self) -> str:
        return f"RoundRobin(pools={len(self._next)})"
