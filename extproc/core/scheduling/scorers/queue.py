"""Shortest scraped waiting queue (vLLM ``num_requests_waiting``, Triton pending
requests), min-max normalised as the GIE queue scorer does. Stale or missing metrics
score 0: an endpoint the router cannot see counts as saturated."""

from __future__ import annotations

from extproc.core.scheduling.framework import Candidate, SchedulingRequest, Scorer


class QueueDepth(Scorer):
    name = "queue"

    def score(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> list[float]:
        load = req.signals.load
        depths: list[float | None] = []
        for c in candidates:
            ep = load.get(c.address)
            if ep is None or ep.waiting is None or load.is_stale(ep, req.now):
                depths.append(None)
            else:
                depths.append(ep.waiting)
        known = [d for d in depths if d is not None]
        if not known:
            return [0.0] * len(candidates)
        lo, hi = min(known), max(known)
        span = hi - lo
        return [0.0 if d is None else (1.0 if span <= 0 else (hi - d) / span) for d in depths]
