"""Power of two choices: draw two candidates at random, keep the higher weighted score
(ties: the first drawn); fallbacks follow in score order. Spreads load between scrapes
where max-score would send every pick to the same "best" endpoint."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from extproc.core.scheduling.framework import Candidate, RandomPicker


class PowerOfTwo(RandomPicker):
    name = "power_of_two"

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
        if size == 1:
            return [candidates[0]]
        a, b = self._rng.sample(range(size), 2)
        if scores is not None and scores[b] > scores[a]:
            a, b = b, a
        rest = [i for i in range(size) if i != a]
        if scores is not None:
            rest.sort(key=lambda i: -scores[i])
        order = [a, *rest]
        return [candidates[i] for i in order[:n]]
