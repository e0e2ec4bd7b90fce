"""Highest weighted score first, ties broken at random (the GIE default picker).

Without scorers every candidate ties, so this picks uniformly at random.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from extproc.core.scheduling.framework import Candidate, RandomPicker


class MaxScore(RandomPicker):
    name = "max_score"

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
