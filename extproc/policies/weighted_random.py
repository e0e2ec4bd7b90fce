"""Weighted random: each endpoint is chosen in proportion to its deployment weight.

Fallbacks are drawn the same way without replacement, so they are distinct.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence

from extproc.policies.base import Picker
from extproc.registry.base import Endpoint


class WeightedRandom(Picker):
    name = "weighted_random"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, key: Hashable, candidates: Sequence[Endpoint], n: int) -> list[Endpoint]:
        pool = [c for c in candidates if c.weight > 0]
        out: list[Endpoint] = []
        rand = self._rng.random
        while pool and len(out) < n:
            total = sum(c.weight for c in pool)
            target = rand() * total
            acc = 0.0
            chosen = len(pool) - 1
            for i, c in enumerate(pool):
                acc += c.weight
                if target < acc:
                    chosen = i
                    break
            out.append(pool.pop(chosen))
        return out
