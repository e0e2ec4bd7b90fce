"""Least expected busy time: the router's own in-flight count on an endpoint times how
long that endpoint takes per request (access-log EWMA of the request duration), scored
against the least busy (``min / busy``). A slow endpoint with a few requests looks as
busy as a fast one with many, which plain in-flight counting misses (AIBrix's
least-busy-time idea). Endpoints with no latency sample yet count at the fastest known
duration."""

from __future__ import annotations

from extproc.core.scheduling.framework import Candidate, SchedulingRequest, Scorer
from extproc.core.scheduling.scorers._normalize import ratio_to_best


class LeastBusyTime(Scorer):
    name = "least_busy_time"

    def score(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> list[float]:
        board = req.signals
        counts, latency = board.inflight.counts.get, board.latency.get
        durations = []
        for c in candidates:
            lat = latency(c.address)
            durations.append(None if lat is None else lat.duration_s)
        known = [d for d in durations if d]
        floor = min(known) if known else 1.0
        return ratio_to_best(
            [(counts(c.address, 0) + 1) * (d or floor) for c, d in zip(candidates, durations)]  # noqa: B905
        )
