"""Prefers heavier deployments: each candidate scores its deployment weight over the
largest weight among the candidates (1.0 for the heaviest, 0.0 for weight 0).

With ``max_score`` this sends traffic to the heaviest deployment and keeps the lighter
ones as ordered fallbacks (weighted random spreads it instead).
"""

from __future__ import annotations

from extproc.core.scheduling.framework import Candidate, SchedulingRequest, Scorer


class DeploymentWeight(Scorer):
    name = "deployment_weight"

    def score(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> list[float]:
        top = max((c.endpoint.weight for c in candidates), default=0)
        if top <= 0:
            return [0.0] * len(candidates)
        return [max(c.endpoint.weight, 0) / top for c in candidates]
