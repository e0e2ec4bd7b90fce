"""Leaves out endpoints whose queue or KV-cache usage is at saturation (the GIE endpoint
picker's low-queue and KV-cache filters), so that affinity scorers (prefix, LoRA) can
only pile requests onto an endpoint until it saturates. The queue is the scraped one
plus this worker's picks there since the scrape
(:func:`~extproc.core.signals.waiting_now`). Stale or missing scrapes are unknown, not
full: those endpoints stay (the queue scorer already rates them down). If every
candidate is saturated it keeps them all; admission decides then."""

from __future__ import annotations

from dataclasses import dataclass

from extproc.core.scheduling.framework import Candidate, Filter, SchedulingRequest
from extproc.core.signals import waiting_now


@dataclass(frozen=True, slots=True)
class NotSaturatedParams:
    queue_threshold: float = 5.0
    """Waiting requests at which an endpoint is saturated (GIE: 5)."""
    kv_cache_threshold: float = 0.8
    """KV-cache utilisation at which an endpoint is saturated (GIE: 0.8)."""


class NotSaturated(Filter):
    name = "not_saturated"
    Params = NotSaturatedParams

    def applies(self, req: SchedulingRequest) -> bool:
        return bool(req.signals.load.endpoints)

    def filter(
        self, req: SchedulingRequest, candidates: tuple[Candidate, ...]
    ) -> tuple[Candidate, ...]:
        p: NotSaturatedParams = self.params
        snapshot, inflight = req.signals.load, req.signals.inflight.get
        get, oldest = snapshot.endpoints.get, req.now - snapshot.stale_after_s
        saturated = False
        kept = []
        for c in candidates:
            ep = get(c.address)
            if ep is None or ep.at < oldest:
                kept.append(c)
                continue
            waiting = waiting_now(ep, inflight(c.address))
            if (waiting is not None and waiting >= p.queue_threshold) or (
                ep.kv_usage is not None and ep.kv_usage >= p.kv_cache_threshold
            ):
                saturated = True
            else:
                kept.append(c)
        # Nothing left out: the same tuple, so the profile's score cache stays valid.
        return tuple(kept) if saturated and kept else candidates
