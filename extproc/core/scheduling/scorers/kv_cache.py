"""Most free KV cache: ``1 - kv_usage`` from the scraped metrics (the GIE KV-cache
utilisation scorer). Stale or missing metrics score 0."""

from __future__ import annotations

from extproc.core.scheduling.framework import Candidate, SchedulingRequest, Scorer


class KvCache(Scorer):
    name = "kv_cache"

    def score(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> list[float]:
        load = req.signals.load
        out = []
        for c in candidates:
            ep = load.get(c.address)
            if ep is None or ep.kv_usage is None or load.is_stale(ep, req.now):
                out.append(0.0)
            else:
                out.append(min(1.0, max(0.0, 1.0 - ep.kv_usage)))
        return out
