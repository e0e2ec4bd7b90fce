"""Shortest scraped waiting queue (vLLM ``num_requests_waiting``, Triton pending
requests), min-max normalised as the GIE queue scorer does. Stale or missing metrics
score 0: an endpoint the router cannot see counts as saturated."""

from __future__ import annotations

from extproc.core.scheduling.framework import Candidate, SchedulingRequest, Scorer
from extproc.core.scheduling.scorers._normalize import fresh_until


class QueueDepth(Scorer):
    name = "queue"
    per_request = False

    def score(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> list[float]:
        load = req.signals.load
        endpoints, fresh_after = load.endpoints, req.now - load.stale_after_s
        depths: list[float | None] = []
        for c in candidates:
            ep = endpoints.get(c.address)
            depths.append(None if ep is None or ep.at < fresh_after else ep.waiting)
        known = [d for d in depths if d is not None]
        if not known:
            return [0.0] * len(candidates)
        lo, hi = min(known), max(known)
        span = hi - lo
        return [0.0 if d is None else (1.0 if span <= 0 else (hi - d) / span) for d in depths]

    def valid_until(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> float:
        return fresh_until(req, candidates)
