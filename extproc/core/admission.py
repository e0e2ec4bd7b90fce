"""Admission: capacity quotas, priority classes, load shedding and latency budgets.

Runs in the scheduler after the profile's filters, before its scorers (``explain``
shows each step as a filter named ``admission.*``):

1. **Quota**: endpoints whose deployment (or the endpoint itself) has as many requests
   in flight as its quota share are dropped. Each router process enforces
   ``ceil(quota / deciders)`` from its own in-flight counts (deciders: this router's
   workers plus its peers), so the model servers never see more than ``quota +
   deciders - 1``. When every candidate is full, a class that may be shed gets 429.
2. **Shedding**: an endpoint's *load* is the largest of its waiting queue (as scraped,
   plus this worker's picks there since: :func:`~extproc.core.signals.waiting_now`) /
   ``queue_saturation``, its KV-cache usage / ``kv_saturation`` and its quota use
   (1.0: saturated; stale or missing scrapes count as unknown, not as full: admission
   never sheds on data it does not have). A class with ``max_load`` gets 429 with
   ``Retry-After`` when even the least loaded candidate is at it; a class without
   (``critical``) is never shed and, once everything is saturated, goes to the least
   loaded candidates.
3. **Budget**: endpoints whose predicted time to first token exceeds the request's
   budget (header, or the model's objective) are dropped; when none meets it,
   ``on_budget_miss`` routes to the best one (``budget_at_risk``), or answers 429 or 503.

A malformed or unknown priority or budget header is a 400 naming it, never a default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from extproc.core.errors import BudgetUnmet, InvalidRequest, Overloaded, shown
from extproc.core.request import RequestHead
from extproc.core.signals import waiting_now

if TYPE_CHECKING:
    from extproc.core.scheduling.framework import Candidate, SchedulingRequest
    from extproc.core.scheduling.profile import ScheduleTrace

BudgetPolicy = Literal["route_best", "reject_429", "reject_503"]


@dataclass(frozen=True, slots=True)
class PriorityClass:
    name: str
    max_load: float | None
    """Shed at this load (1.0: saturated); ``None``: never shed."""


@dataclass(frozen=True, slots=True)
class Admission:
    classes: Mapping[str, PriorityClass]
    default: PriorityClass
    header: str
    budget_header: str
    retry_after_s: int
    queue_saturation: float
    kv_saturation: float
    on_budget_miss: BudgetPolicy
    objectives: Mapping[str, float]
    """Model -> time-to-first-token budget in ms."""
    deciders: int = 1
    """Router processes that share each quota (this router's workers and its peers)."""

    def classify(self, head: RequestHead, default: str | None = None) -> PriorityClass:
        """The request's class (400 naming the header for an unknown one); without the
        header, ``default`` (the caller's key or tenant class) or the routing file's."""
        raw = head.headers.get(self.header)
        if raw is None:
            if default is not None:
                return self.classes.get(default, self.default)
            return self.default
        cls = self.classes.get(raw.strip())
        if cls is None:
            raise InvalidRequest(
                f"header {self.header}: {shown(raw.strip())} is not a priority class; "
                f"use one of {', '.join(sorted(self.classes))}",
                header=self.header,
            )
        return cls

    def header_budget(self, head: RequestHead) -> float | None:
        """The budget header's value in ms (400 naming it unless a positive number)."""
        raw = head.headers.get(self.budget_header)
        if raw is None:
            return None
        try:
            value = float(raw.strip())
        except ValueError:
            value = -1.0
        if not math.isfinite(value) or value <= 0:
            raise InvalidRequest(
                f"header {self.budget_header}: {shown(raw)} is not a positive number "
                "of milliseconds",
                header=self.budget_header,
            )
        return value

    def share(self, quota: int) -> int:
        """This router process's share of a quota (at least 1)."""
        return max(1, math.ceil(quota / self.deciders))

    def overloaded(self, cls: PriorityClass, reason: str, why: str) -> Overloaded:
        return Overloaded(
            f"{why}; {cls.name} requests are shed, retry after {self.retry_after_s} s",
            retry_after_s=self.retry_after_s,
            reason=reason,
        )


def _has_quota(req: SchedulingRequest) -> bool:
    return any(
        d.max_inflight is not None or d.max_inflight_per_endpoint is not None
        for d in req.model.deployments
    )


def quota_uses(adm: Admission, req: SchedulingRequest, cands: tuple[Candidate, ...]) -> list[float]:
    """Each candidate's fullest quota share: its deployment's and its own (1.0: full)."""
    get = req.signals.inflight.get
    by_deployment: dict[str, float] = {}
    out = []
    for c in cands:
        dep = c.deployment
        use = 0.0
        if dep.max_inflight is not None:
            got = by_deployment.get(dep.name)
            if got is None:
                on_dep = sum(get(e.address) for e in dep.endpoints)
                got = by_deployment[dep.name] = on_dep / adm.share(dep.max_inflight)
            use = got
        if dep.max_inflight_per_endpoint is not None:
            use = max(use, get(c.address) / adm.share(dep.max_inflight_per_endpoint))
        out.append(use)
    return out


def scraped_load(adm: Admission, req: SchedulingRequest, c: Candidate) -> float:
    """Queue and KV-cache load from the model server's metrics (0.0 when unknown)."""
    board = req.signals.load
    ep = board.endpoints.get(c.address)
    if ep is None or req.now - ep.at > board.stale_after_s:
        return 0.0
    load = 0.0
    waiting = waiting_now(ep, req.signals.inflight.get(c.address))
    if waiting is not None:
        load = waiting / adm.queue_saturation
    if ep.kv_usage is not None:
        load = max(load, ep.kv_usage / adm.kv_saturation)
    return load


def predicted_ttft_ms(req: SchedulingRequest, c: Candidate) -> float | None:
    """Observed time to first byte (EWMA), plus the queue ahead of the request: waiting
    requests times the observed request time, spread over the running slots. ``None``
    before the endpoint has served anything (it is then given the benefit of the doubt)."""
    board = req.signals
    lat = board.latency.get(c.address)
    if lat is None or lat.ttfb_s is None:
        return None
    ahead = 0.0
    ep = board.load.endpoints.get(c.address)
    if (
        ep is not None
        and ep.waiting
        and lat.duration_s
        and req.now - ep.at <= board.load.stale_after_s
    ):
        ahead = ep.waiting * lat.duration_s / max(1.0, ep.running or 1.0)
    return (lat.ttfb_s + ahead) * 1000.0


def _keep(
    trace: ScheduleTrace | None, name: str, kept: tuple[Candidate, ...], **extra: Any
) -> None:
    if trace is not None:
        trace.filters.append(
            {"filter": name, "applied": True, "kept": [c.address for c in kept], **extra}
        )


def _saturated(
    adm: Admission,
    req: SchedulingRequest,
    cls: PriorityClass,
    cands: tuple[Candidate, ...],
    loads: list[float],
    trace: ScheduleTrace | None,
) -> tuple[Candidate, ...]:
    """Every candidate at or past ``cls``'s threshold (or ``explain``): shed ``cls``, or
    for a class never shed, keep the least loaded."""
    least = min(loads)
    if trace is not None:
        for c, load in zip(cands, loads, strict=True):
            trace.signals.setdefault(c.address, {})["load"] = round(load, 3)
    if cls.max_load is not None and least >= cls.max_load:
        _keep(trace, "admission.load", (), priority=cls.name, least_load=least)
        raise adm.overloaded(
            cls,
            "load",
            f"every endpoint of model {req.model.name!r} is loaded "
            f"(least {least:.2f}, {cls.name} shed at {cls.max_load:g})",
        )
    if cls.max_load is None and least >= 1.0:
        cands = tuple(c for c, load in zip(cands, loads, strict=True) if load == least)
    _keep(trace, "admission.load", cands, priority=cls.name, least_load=round(least, 3))
    return cands


def admit(
    adm: Admission,
    req: SchedulingRequest,
    cands: tuple[Candidate, ...],
    trace: ScheduleTrace | None = None,
) -> tuple[Candidate, ...]:
    """``cands`` after quotas, shedding and the budget (see the module docstring)."""
    cls = req.priority or adm.default
    quota = _has_quota(req)
    uses: dict[str, float] = {}
    if quota:
        use = quota_uses(adm, req, cands)
        uses = {c.address: u for c, u in zip(cands, use, strict=True)}
        if trace is not None:
            for c, u in zip(cands, use, strict=True):
                trace.signals.setdefault(c.address, {})["quota_use"] = round(u, 3)
        kept = tuple(c for c, u in zip(cands, use, strict=True) if u < 1.0)
        _keep(trace, "admission.quota", kept)
        if kept:
            cands = kept if len(kept) < len(cands) else cands  # same tuple: memos hit
        elif cls.max_load is not None:
            raise adm.overloaded(
                cls, "quota", f"every deployment of model {req.model.name!r} is at its quota"
            )
        # else: a class never shed goes on over quota, to the least loaded below
    if quota or req.signals.load.endpoints:
        threshold = 1.0 if cls.max_load is None else cls.max_load

        def load(c: Candidate) -> float:
            return max(scraped_load(adm, req, c), uses.get(c.address, 0.0))

        # The usual case, some room left: stop at the first candidate below the threshold.
        if trace is not None or not any(load(c) < threshold for c in cands):
            cands = _saturated(adm, req, cls, cands, [load(c) for c in cands], trace)
    budget = req.budget_ms
    if budget is not None:
        predicted = [predicted_ttft_ms(req, c) for c in cands]
        if trace is not None:
            for c, p in zip(cands, predicted, strict=True):
                trace.signals.setdefault(c.address, {})["predicted_ttft_ms"] = (
                    None if p is None else round(p, 1)
                )
        kept = tuple(c for c, p in zip(cands, predicted, strict=True) if p is None or p <= budget)
        if len(kept) == len(cands):
            kept = cands  # the same tuple, so the scorers' memos still hit
        if not kept:
            best = min(p for p in predicted if p is not None)
            why = (
                f"no endpoint of model {req.model.name!r} is predicted to answer within "
                f"{budget:g} ms (best {best:.0f} ms)"
            )
            if adm.on_budget_miss == "reject_429":
                raise adm.overloaded(cls, "budget", why)
            if adm.on_budget_miss == "reject_503":
                raise BudgetUnmet(why, retry_after_s=adm.retry_after_s, reason="budget")
            kept = tuple(c for c, p in zip(cands, predicted, strict=True) if p == best)
            req.budget_at_risk = True
        _keep(trace, "admission.budget", kept, budget_ms=budget, at_risk=req.budget_at_risk)
        cands = kept
    return cands
