"""A scheduling profile: filters -> weighted scorers -> picker, named in the routing file."""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from extproc.core.errors import NoHealthyDeployment
from extproc.core.scheduling.framework import (
    Candidate,
    Filter,
    Picker,
    SchedulingRequest,
    Scorer,
)


@dataclass(frozen=True, slots=True)
class WeightedScorer:
    scorer: Scorer
    weight: float


@dataclass(slots=True)
class ScheduleTrace:
    """What one scheduling run did, step by step (``model-router explain``)."""

    profile: str = ""
    filters: list[dict[str, Any]] = field(default_factory=list)
    scorers: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, float] | None = None
    picker: str = ""
    signals: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each candidate's live signals when it was scored."""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"profile": self.profile, "filters": self.filters}
        if self.signals:
            out["signals"] = self.signals
        if self.scorers:
            out["scorers"] = self.scorers
            out["total_scores"] = self.totals
        out["picker"] = self.picker
        return out


def candidate_signals(req: SchedulingRequest, candidate: Candidate) -> dict[str, Any]:
    """What the live signals say about one endpoint (``explain``), and what the request
    would cost there."""
    address = candidate.address
    board = req.signals
    load = board.load.get(address)
    lat = board.latency.get(address)
    until = board.ejected.get(address, 0.0)
    return {
        "inflight": board.inflight.get(address),
        "queue": None if load is None else load.waiting,
        "running": None if load is None else load.running,
        "kv_cache_usage": None if load is None else load.kv_usage,
        "load_age_s": None if load is None else round(req.now - load.at, 3),
        "load_stale": board.load.is_stale(load, req.now),
        "ttfb_ewma_s": None if lat is None else lat.ttfb_s,
        "ejected_for_s": round(until - req.now, 3) if until > req.now else 0.0,
        "estimated_cost": req.cost(candidate.deployment),
    }


class Profile:
    """One named way of choosing endpoints; its pickers keep their state across snapshots."""

    __slots__ = ("_static", "_static_scorers", "cached_filters", "dynamic_scorers", "filters",
                 "max_fallbacks", "name", "picker", "request_filters", "scorers")  # fmt: skip

    def __init__(
        self,
        name: str,
        filters: tuple[Filter, ...],
        scorers: tuple[WeightedScorer, ...],
        picker: Picker,
        max_fallbacks: int,
    ) -> None:
        self.name = name
        self.filters = filters
        self.scorers = scorers
        self.picker = picker
        self.max_fallbacks = max_fallbacks
        n = 0
        while n < len(filters) and filters[n].cacheable:
            n += 1
        self.cached_filters = filters[:n]
        """The leading filters that depend only on snapshot, model and version."""
        self.request_filters = filters[n:]
        self._static_scorers = tuple(w for w in scorers if not w.scorer.per_request)
        self.dynamic_scorers = tuple(w for w in scorers if w.scorer.per_request)
        self._static: tuple[Any, ...] | None = None
        """(candidates, load, latency, valid until, weighted sum) of the last reuse."""

    def __repr__(self) -> str:
        scorers = [f"{w.scorer.name}*{w.weight:g}" for w in self.scorers]
        return (
            f"Profile({self.name!r}, filters={[f.name for f in self.filters]}, "
            f"scorers={scorers}, picker={self.picker!r}, max_fallbacks={self.max_fallbacks})"
        )

    def apply_filters(
        self,
        req: SchedulingRequest,
        candidates: tuple[Candidate, ...],
        filters: tuple[Filter, ...],
        trace: ScheduleTrace | None = None,
    ) -> tuple[Candidate, ...]:
        """``candidates`` through ``filters``; 503 naming why when one keeps nothing."""
        for f in filters:  # a plain loop: on the hot path this is usually two applies()
            if not f.applies(req):
                if trace is not None:
                    trace.filters.append({"filter": f.name, "applied": False})
                continue
            kept = f.filter(req, candidates)
            if trace is not None:
                trace.filters.append(
                    {"filter": f.name, "applied": True, "kept": [c.address for c in kept]}
                )
            if not kept:
                raise NoHealthyDeployment(f.why_empty(req, candidates))
            candidates = kept
        return candidates

    def score(
        self,
        req: SchedulingRequest,
        candidates: tuple[Candidate, ...],
        trace: ScheduleTrace | None = None,
    ) -> list[float] | None:
        """Weighted sums of the scorers' scores (``None`` without scorers)."""
        if not self.scorers:
            return None
        if trace is None:
            return self._fast_score(req, candidates)
        for c in candidates:  # admission may have added load and predicted TTFT
            trace.signals[c.address] = {
                **candidate_signals(req, c),
                **trace.signals.get(c.address, {}),
            }
        scores_of: dict[int, list[float]] = {}
        for ws in self.scorers:  # shown in the profile's order
            scores = scores_of[id(ws)] = ws.scorer.score(req, candidates)
            trace.scorers.append(
                {
                    "scorer": ws.scorer.name,
                    "weight": ws.weight,
                    "scores": {c.address: s for c, s in zip(candidates, scores, strict=True)},
                }
            )
        # Summed in the hot path's order (snapshot scores first), so the totals are bit
        # for bit the ones it picks on: max_score breaks ties by equality.
        totals = [0.0] * len(candidates)
        for ws in (*self._static_scorers, *self.dynamic_scorers):
            w = ws.weight
            totals = [t + w * s for t, s in zip(totals, scores_of[id(ws)], strict=True)]
        trace.totals = {c.address: t for c, t in zip(candidates, totals, strict=True)}
        return totals

    def _fast_score(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> list[float]:
        """The hot path's weighted sum: the scores that depend only on the signal
        snapshots are summed once per snapshot and candidate pool, then reused."""
        board = req.signals
        cached = self._static
        if (
            cached is not None
            and cached[0] is candidates
            and cached[1] is board.load
            and cached[2] is board.latency
            and req.now < cached[3]
        ):
            totals: list[float] = cached[4]
        else:
            totals = [0.0] * len(candidates)
            valid = math.inf
            for ws in self._static_scorers:
                w = ws.weight
                scores = ws.scorer.score(req, candidates)
                totals = [t + w * s for t, s in zip(totals, scores)]  # noqa: B905
                valid = min(valid, ws.scorer.valid_until(req, candidates))
            self._static = (candidates, board.load, board.latency, valid, totals)
        shared = True  # totals is the cached list: copy before adding in place
        for ws in self.dynamic_scorers:
            w, scorer = ws.weight, ws.scorer
            if scorer.sparse:
                hits = scorer.score_sparse(req, candidates)
                if hits:
                    if shared:
                        totals, shared = totals.copy(), False
                    for i, s in hits.items():
                        totals[i] += w * s
            else:
                totals, shared = scorer.add_weighted(req, candidates, totals, w), False
        return totals

    def pick(
        self,
        key: Hashable,
        req: SchedulingRequest,
        candidates: tuple[Candidate, ...],
        trace: ScheduleTrace | None = None,
    ) -> list[Candidate]:
        scores = self.score(req, candidates, trace) if self.scorers else None
        if trace is not None:
            trace.picker = self.picker.name
        picked = self.picker.pick(key, candidates, scores, 1 + self.max_fallbacks)
        if picked and self.scorers and trace is None:  # explain teaches the scorers nothing
            for ws in self.scorers:
                ws.scorer.picked(req, picked[0])
        return picked
