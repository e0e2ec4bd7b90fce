"""Keeps endpoints of deployments that may take traffic: enabled, weight above 0.

(Endpoints a registry knows to be unhealthy are not candidates at all: a snapshot
lists them under ``Deployment.excluded``.)
"""

from __future__ import annotations

from extproc.core.scheduling.filters.diagnosis import no_routable_deployment
from extproc.core.scheduling.framework import Candidate, Filter, SchedulingRequest


class Routable(Filter):
    name = "routable"
    cacheable = True

    def filter(
        self, req: SchedulingRequest, candidates: tuple[Candidate, ...]
    ) -> tuple[Candidate, ...]:
        return tuple(c for c in candidates if c.deployment.routable)

    def why_empty(self, req: SchedulingRequest, before: tuple[Candidate, ...]) -> str:
        return no_routable_deployment(req.model, req.version, req.capabilities)
