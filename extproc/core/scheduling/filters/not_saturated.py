"""Leaves out endpoints whose scraped queue or KV-cache usage is at saturation (the GIE
endpoint picker's low-queue and KV-cache filters), so that affinity scorers (prefix,
LoRA) cannot keep piling requests onto an endpoint past saturation. Stale or missing
scrapes are unknown, not full: those endpoints stay (the queue scorer already rates
them down). If every candidate is saturated it keeps them all; admission decides then.

It reads the scrape only (not this worker's picks since), so its answer is computed
once per load snapshot and candidate pool and reused: the same tuple, so the profile's
cached scores stay valid. A burst can overshoot it by one scrape interval's arrivals;
admission's own check counts those picks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from extproc.core.scheduling.framework import Candidate, Filter, SchedulingRequest


@dataclass(frozen=True, slots=True)
class NotSaturatedParams:
    queue_threshold: float = 5.0
    """Waiting requests at which an endpoint is saturated (GIE: 5)."""
    kv_cache_threshold: float = 0.8
    """KV-cache utilisation at which an endpoint is saturated (GIE: 0.8)."""


class NotSaturated(Filter):
    name = "not_saturated"
    Params = NotSaturatedParams

    def __init__(self, params: NotSaturatedParams | None = None) -> None:
        super().__init__(params)
        self._memo: tuple[object, object, float, tuple[Candidate, ...]] | None = None

    def __repr__(self) -> str:
        return f"NotSaturated({self.params!r}, memo={self._memo is not None})"

    def applies(self, req: SchedulingRequest) -> bool:
        return bool(req.signals.load.endpoints)

    def filter(
        self, req: SchedulingRequest, candidates: tuple[Candidate, ...]
    ) -> tuple[Candidate, ...]:
        snapshot = req.signals.load
        memo = self._memo
        if memo is not None and memo[0] is candidates and memo[1] is snapshot and req.now < memo[2]:
            return memo[3]
        p: NotSaturatedParams = self.params
        get, oldest = snapshot.endpoints.get, req.now - snapshot.stale_after_s
        kept, until = [], math.inf
        for c in candidates:
            ep = get(c.address)
            if ep is None or ep.at < oldest:
                kept.append(c)
                continue
            until = min(until, ep.at + snapshot.stale_after_s)  # turns unknown then
            if (ep.waiting is None or ep.waiting < p.queue_threshold) and (
                ep.kv_usage is None or ep.kv_usage < p.kv_cache_threshold
            ):
                kept.append(c)
        result = tuple(kept) if kept and len(kept) < len(candidates) else candidates
        self._memo = (candidates, snapshot, until, result)
        return result
