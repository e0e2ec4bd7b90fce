"""Fewest requests in flight from this router (min-max normalised): the router counts its
own picks as it makes them, so this is fresh at every decision, with no scrape delay."""

from __future__ import annotations

from extproc.core.scheduling.framework import Candidate, SchedulingRequest, Scorer
from extproc.core.scheduling.scorers._normalize import add_lower_is_better, lower_is_better


class LeastInflight(Scorer):
    name = "least_inflight"

    def score(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> list[float]:
        get = req.signals.inflight.counts.get
        return lower_is_better([get(c.address, 0) for c in candidates])

    def add_weighted(
        self,
        req: SchedulingRequest,
        candidates: tuple[Candidate, ...],
        totals: list[float],
        weight: float,
    ) -> list[float]:
        counts = req.signals.inflight.counts
        if not counts:  # nothing in flight: every candidate scores 1.0
            return [t + weight for t in totals]
        get = counts.get
        return add_lower_is_better(totals, [get(c.address, 0) for c in candidates], weight)
