"""Most free KV cache: ``1 - kv_usage`` from the scraped metrics (the GIE KV-cache
utilisation scorer). Stale or missing metrics score 0."""

from __future__ import annotations

from extproc.core.scheduling.framework import Candidate, SchedulingRequest, Scorer
from extproc.core.scheduling.scorers._normalize import fresh_until


class KvCache(Scorer):
    name = "kv_cache"
    per_request = False

    def score(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> list[float]:
        load = req.signals.load
        endpoints, fresh_after = load.endpoints, req.now - load.stale_after_s
        out = []
        for c in candidates:
            ep = endpoints.get(c.address)
            kv = None if ep is None or ep.at < fresh_after else ep.kv_usage
            if kv is None:
                out.append(0.0)
            else:
                free = 1.0 - kv
                out.append(0.0 if free < 0.0 else 1.0 if free > 1.0 else free)
        return out

    def valid_until(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> float:
        return fresh_until(req, candidates)
