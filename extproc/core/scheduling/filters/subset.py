"""Keeps endpoints inside the proxy's subset hint (endpoint picker protocol metadata
``envoy.lb.subset_hint``), when the proxy sent one."""

from __future__ import annotations

from extproc.core.scheduling.framework import Candidate, Filter, SchedulingRequest


class Subset(Filter):
    name = "subset"

    def applies(self, req: SchedulingRequest) -> bool:
        return req.subset is not None

    def filter(
        self, req: SchedulingRequest, candidates: tuple[Candidate, ...]
    ) -> tuple[Candidate, ...]:
        allowed = req.subset or frozenset()
        return tuple(c for c in candidates if c.address in allowed)

    def why_empty(self, req: SchedulingRequest, before: tuple[Candidate, ...]) -> str:
        n = len(req.subset or ())
        return (
            f"none of the {n} endpoints in the proxy's subset hint "
            f"can serve model {req.model.name!r}"
        )
