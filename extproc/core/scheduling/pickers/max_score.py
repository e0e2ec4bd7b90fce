"""Highest weighted score first, ties for the top broken at random (the GIE default
picker); fallbacks follow in score order. Without scorers every candidate ties, so
this picks uniformly at random.
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
        size = len(candidates)
        if size == 0:
            return []
        if scores is None:
            return self._rng.sample(list(candidates), min(n, size))
        order = sorted(range(size), key=scores.__getitem__, reverse=True)  # in C
        best, tied = scores[order[0]], 1
        while tied < size and scores[order[tied]] == best:
            tied += 1
        if tied > 1:  # random among the leaders; the others keep score order
            j = self._rng.randrange(tied)
            order[0], order[j] = order[j], order[0]
        return [candidates[i] for i in order[:n]]
