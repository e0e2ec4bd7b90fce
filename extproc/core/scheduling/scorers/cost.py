"""Prefers the cheapest deployment: each candidate's estimated cost for this request
(its deployment's ``cost``: per request, per 1k prompt and completion tokens; see
:mod:`extproc.core.usage` for the token estimate), min-max normalised so the cheapest
scores 1.0 and the dearest 0.0. A deployment with no declared cost counts as free.

Weighted above the load scorers (the ``cost-aware`` profile), it keeps traffic on the
cheapest deployment that passed the filters: admission drops it first when its quota is
full or it would miss the request's latency budget.
"""

from __future__ import annotations

from extproc.core.scheduling.framework import Candidate, SchedulingRequest, Scorer
from extproc.core.scheduling.scorers._normalize import lower_is_better


class Cost(Scorer):
    name = "cost"

    def score(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> list[float]:
        by_deployment: dict[str, float] = {}
        costs = []
        for c in candidates:
            name = c.deployment.name
            cost = by_deployment.get(name)
            if cost is None:
                cost = by_deployment[name] = req.cost(c.deployment) or 0.0
            costs.append(cost)
        return lower_is_better(costs)
