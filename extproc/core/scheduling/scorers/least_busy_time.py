"""Least expected busy time: the router's own in-flight count on an endpoint times how
long that endpoint takes per request (access-log EWMA of the request duration), scored
against the least busy (``min / busy``). A slow endpoint with a few requests looks as
busy as a fast one with many, which plain in-flight counting misses (AIBrix's
least-busy-time idea). Endpoints with no latency sample yet count at the fastest known
duration."""

from __future__ import annotations

from extproc.core.scheduling.framework import Candidate, SchedulingRequest, Scorer
from extproc.core.scheduling.scorers._normalize import add_ratio_to_best, ratio_to_best


class LeastBusyTime(Scorer):
    name = "least_busy_time"

    def __init__(self, params: object = None) -> None:
        super().__init__(params)
        self._memo: tuple[object, object, list[float], dict[str, int]] | None = None
        """(candidates, latency snapshot, each candidate's request duration, index by
        address): reused until either changes (the latency snapshot changes when
        access-log entries arrive)."""

    def _durations(
        self, req: SchedulingRequest, candidates: tuple[Candidate, ...]
    ) -> tuple[list[float], dict[str, int]]:
        latency = req.signals.latency
        memo = self._memo
        if memo is not None and memo[0] is candidates and memo[1] is latency:
            return memo[2], memo[3]
        got = latency.get
        durations = [lat.duration_s if (lat := got(c.address)) is not None else None
                     for c in candidates]  # fmt: skip
        known = [d for d in durations if d]
        floor = min(known) if known else 1.0
        out = [d or floor for d in durations]
        index = {c.address: i for i, c in enumerate(candidates)}
        self._memo = (candidates, latency, out, index)
        return out, index

    def _busy(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> list[float]:
        durations, index = self._durations(req, candidates)
        busy = durations.copy()  # (0 in flight + 1) x duration
        for address, n in req.signals.inflight.counts.items():  # only endpoints in use
            i = index.get(address)
            if i is not None and n:
                busy[i] = (n + 1) * durations[i]
        return busy

    def score(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> list[float]:
        return ratio_to_best(self._busy(req, candidates))

    def add_weighted(
        self,
        req: SchedulingRequest,
        candidates: tuple[Candidate, ...],
        totals: list[float],
        weight: float,
    ) -> list[float]:
        return add_ratio_to_best(totals, self._busy(req, candidates), weight)
