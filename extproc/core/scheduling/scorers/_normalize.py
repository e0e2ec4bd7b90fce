"""Shared arithmetic for scorers: min-max normalisation, lower is better."""

from __future__ import annotations

from collections.abc import Sequence


def lower_is_better(values: Sequence[float]) -> list[float]:
    """Min-max normalise so the smallest value scores 1.0 and the largest 0.0 (all equal:
    all 1.0, so an idle pool ties instead of scoring 0)."""
    lo, hi = min(values, default=0.0), max(values, default=0.0)
    if hi <= lo:
        return [1.0] * len(values)
    span = hi - lo
    return [(hi - v) / span for v in values]
