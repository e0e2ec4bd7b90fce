"""Shared arithmetic for scorers: min-max normalisation, lower is better.

Each normalisation is written once, as "add weight x score to totals" (the hot path's
weighted sum in one pass over the pool, :meth:`Scorer.add_weighted`); the plain scores
are that added to zeros with weight 1, the same arithmetic bit for bit (0.0 + 1.0 * s is
s). So ``explain``'s totals equal the hot path's, and ``max_score``, which breaks ties by
equality, agrees with it."""

from __future__ import annotations

import math
from collections.abc import Sequence

from extproc.core.scheduling.framework import Candidate, SchedulingRequest


def add_lower_is_better(
    totals: Sequence[float], values: Sequence[float], weight: float
) -> list[float]:  # ints welcome in values
    """``totals`` plus ``weight`` times :func:`lower_is_better` of ``values``."""
    lo, hi = min(values, default=0.0), max(values, default=0.0)
    if hi <= lo:
        return [t + weight for t in totals]
    span = hi - lo
    return [t + weight * ((hi - v) / span) for t, v in zip(totals, values, strict=True)]


def lower_is_better(values: Sequence[float]) -> list[float]:  # ints welcome
    """Min-max normalise so the smallest value scores 1.0 and the largest 0.0 (all equal:
    all 1.0, so an idle pool ties instead of scoring 0)."""
    return add_lower_is_better([0.0] * len(values), values, 1.0)


def add_ratio_to_best(
    totals: Sequence[float], values: Sequence[float], weight: float
) -> list[float]:
    """``totals`` plus ``weight`` times :func:`ratio_to_best` of ``values``."""
    best = min(values, default=0.0)
    if best > 0:  # the usual case: every value positive
        return [t + weight * (best / v) for t, v in zip(totals, values, strict=True)]
    positive = [v for v in values if v > 0]
    if not positive:
        return [t + weight for t in totals]
    best = min(positive)
    return [t + weight * (best / v if v > 0 else 1.0)
            for t, v in zip(totals, values, strict=True)]  # fmt: skip


def ratio_to_best(values: Sequence[float]) -> list[float]:
    """Each value against the smallest: ``min / value`` (the best scores 1.0, twice as
    slow 0.5). Unlike min-max, a 5 % difference stays a 5 % difference, so noise in
    measured latencies does not swing the score from 0 to 1."""
    return add_ratio_to_best([0.0] * len(values), values, 1.0)


def fresh_until(req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> float:
    """When the first candidate whose scraped load is fresh now turns stale."""
    load = req.signals.load
    endpoints, fresh_after = load.endpoints, req.now - load.stale_after_s
    ats = [
        ep.at for c in candidates if (ep := endpoints.get(c.address)) is not None
        and ep.at >= fresh_after
    ]  # fmt: skip
    return min(ats) + load.stale_after_s if ats else math.inf
