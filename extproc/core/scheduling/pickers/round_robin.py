"""Round robin over the candidates of each pool (scores are not read)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from extproc.core.scheduling.framework import Candidate, Picker


class RoundRobin(Picker):
    name = "round_robin"
    max_pools = 4096
    """Pools are keyed partly by client-chosen requirements; past this many the
    counters are forgotten (bounded memory)."""

    def __init__(self, params: object = None) -> None:
        super().__init__(params)
        self._next: dict[Hashable, int] = {}

    def pick(
        self,
        key: Hashable,
        candidates: Sequence[Candidate],
        scores: Sequence[float] | None,
        n: int,
    ) -> list[Candidate]:
        size = len(candidates)
        if size == 0:
            return []
        nxt = self._next
        start = nxt.get(key, 0) % size
        if len(nxt) >= self.max_pools and key not in nxt:
            nxt.clear()
        nxt[key] = start + 1
        count = min(n, size)
        return [candidates[(start + i) % size] for i in range(count)]

    def __repr__(self) -> str:
        return f"RoundRobin(pools={len(self._next)})"
