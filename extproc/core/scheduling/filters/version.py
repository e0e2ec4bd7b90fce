"""Keeps endpoints of the requested version (every version when none was requested)."""

from __future__ import annotations

from extproc.core.scheduling.filters.diagnosis import no_routable_deployment
from extproc.core.scheduling.framework import Candidate, Filter, SchedulingRequest


class Version(Filter):
    name = "version"
    cacheable = True

    def applies(self, req: SchedulingRequest) -> bool:
        return req.version is not None

    def filter(
        self, req: SchedulingRequest, candidates: tuple[Candidate, ...]
    ) -> tuple[Candidate, ...]:
        return tuple(c for c in candidates if c.deployment.version == req.version)

    def why_empty(self, req: SchedulingRequest, before: tuple[Candidate, ...]) -> str:
        return no_routable_deployment(req.model, req.version, req.capabilities)
