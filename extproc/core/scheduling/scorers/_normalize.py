"""Shared arithmetic for scorers: min-max normalisation, lower is better."""

from __future__ import annotations

import math
from collections.abc import Sequence

from extproc.core.scheduling.framework import Candidate, SchedulingRequest


def lower_is_better(values: Sequence[float]) -> list[float]:  # ints welcome
    """Min-max normalise so the smallest value scores 1.0 and the largest 0.0 (all equal:
    all 1.0, so an idle pool ties instead of scoring 0)."""
    lo, hi = min(values, default=0.0), max(values, default=0.0)
    if hi <= lo:
        return [1.0] * len(values)
    span = hi - lo
    return [(hi - v) / span for v in values]


def ratio_to_best(values: Sequence[float]) -> list[float]:
    """Each value against the smallest: ``min / value`` (the best scores 1.0, twice as
    slow 0.5). Unlike min-max, a 5 % difference stays a 5 % difference, so noise in
    measured latencies does not swing the score from 0 to 1."""
    positive = [v for v in values if v > 0]
    if not positive:
        return [1.0] * len(values)
    best = min(positive)
    return [best / v if v > 0 else 1.0 for v in values]


def fresh_until(req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> float:
    """When the first candidate whose scraped load is fresh now turns stale."""
    load = req.signals.load
    endpoints, fresh_after = load.endpoints, req.now - load.stale_after_s
    ats = [
        ep.at for c in candidates if (ep := endpoints.get(c.address)) is not None
        and ep.at >= fresh_after
    ]  # fmt: skip
    return min(ats) + load.stale_after_s if ats else math.inf
