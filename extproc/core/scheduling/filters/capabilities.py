"""Keeps endpoints whose deployment satisfies the request's capability requirements
(``x-model-capabilities`` and content rules; see :mod:`extproc.core.capabilities`)."""

from __future__ import annotations

from extproc.core import capabilities
from extproc.core.scheduling.filters.diagnosis import no_routable_deployment
from extproc.core.scheduling.framework import Candidate, Filter, SchedulingRequest


class Capabilities(Filter):
    name = "capabilities"

    def applies(self, req: SchedulingRequest) -> bool:
        return bool(req.capabilities)

    def filter(
        self, req: SchedulingRequest, candidates: tuple[Candidate, ...]
    ) -> tuple[Candidate, ...]:
        caps = req.capabilities
        return tuple(c for c in candidates if capabilities.satisfied(caps, c.deployment.tags))

    def why_empty(self, req: SchedulingRequest, before: tuple[Candidate, ...]) -> str:
        return no_routable_deployment(req.model, req.version, req.capabilities)
