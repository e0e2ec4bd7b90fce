"""Fewest requests in flight from this router (min-max normalised): the router counts its
own picks as it makes them, so this is fresh at every decision, with no scrape delay."""

from __future__ import annotations

from extproc.core.scheduling.framework import Candidate, SchedulingRequest, Scorer
from extproc.core.scheduling.scorers._normalize import lower_is_better


class LeastInflight(Scorer):
    name = "least_inflight"

    def score(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> list[float]:
        get = req.signals.inflight.counts.get
        return lower_is_better([get(c.address, 0) for c in candidates])
