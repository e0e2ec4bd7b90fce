"""Weighted random: each endpoint is chosen in proportion to its deployment weight.

Fallbacks are drawn the same way without replacement, so they are distinct.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from extproc.core.scheduling.framework import Candidate, RandomPicker


class WeightedRandom(RandomPicker):
    name = "weighted_random"

    def pick(
        self,
        key: Hashable,
        candidates: Sequence[Candidate],
        scores: Sequence[float] | None,
        n: int,
    ) -> list[Candidate]:
        pool = [c for c in candidates if c.endpoint.weight > 0]
        out: list[Candidate] = []
        rand = self._rng.random
        while pool and len(out) < n:
            total = sum(c.endpoint.weight for c in pool)
            target = rand() * total
            acc = 0.0
            chosen = len(pool) - 1
            for i, c in enumerate(pool):
                acc += c.endpoint.weight
                if target < acc:
                    chosen = i
                    break
            out.append(pool.pop(chosen))
        return out
