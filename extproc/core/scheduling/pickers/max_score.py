"""Highest weighted score first, ties broken at random (the GIE default picker).

Without scorers every candidate ties, so this picks uniformly at random.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from extproc.core.scheduling.framework import Candidate, Picker


@dataclass(frozen=True, slots=True)
class MaxScoreParams:
    seed: int | None = None
    """Seed the tie-break (reproducible picks, for tests and benchmarks)."""


class MaxScore(Picker):
    name = "max_score"
    Params = MaxScoreParams

    def __init__(self, params: MaxScoreParams | None = None) -> None:
        super().__init__(params)
        self._rng = random.Random(self.params.seed)

    def pick(
        self,
        key: Hashable,
        candidates: Sequence[Candidate],
        scores: Sequence[float] | None,
        n: int,
    ) -> list[Candidate]:
        order = list(range(len(candidates)))
        self._rng.shuffle(order)  # random tie-break: the sort below is stable
        if scores is not None:
            order.sort(key=lambda i: -scores[i])
        return [candidates[i] for i in order[:n]]
