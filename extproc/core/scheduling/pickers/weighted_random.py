"""Weighted random: each endpoint is chosen in proportion to its deployment weight.

Fallbacks are drawn the same way without replacement, so they are distinct.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from extproc.core.scheduling.framework import Candidate, Picker


@dataclass(frozen=True, slots=True)
class WeightedRandomParams:
    seed: int | None = None
    """Seed the generator (reproducible picks, for tests and benchmarks)."""


class WeightedRandom(Picker):
    name = "weighted_random"
    Params = WeightedRandomParams

    def __init__(self, params: WeightedRandomParams | None = None) -> None:
        super().__init__(params)
        self._rng = random.Random(self.params.seed)

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
