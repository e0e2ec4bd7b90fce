"""Lowest observed latency: an EWMA of time to first upstream byte (a proxy for time to
first token) from Envoy's access log, scored against the fastest (``min / ttfb``: twice
as slow scores 0.5). Endpoints with no samples yet score as well as the best one, so a
new endpoint gets traffic to be measured."""

from __future__ import annotations

from extproc.core.scheduling.framework import Candidate, SchedulingRequest, Scorer


class Latency(Scorer):
    name = "latency"
    per_request = False

    def score(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> list[float]:
        stats = req.signals.latency
        values: list[float | None] = []
        for c in candidates:
            s = stats.get(c.address)
            values.append(None if s is None or s.ttfb_s is None else s.ttfb_s)
        known = [v for v in values if v is not None and v > 0]
        if not known:
            return [1.0] * len(candidates)
        best = min(known)
        return [1.0 if v is None or v <= 0 else best / v for v in values]
