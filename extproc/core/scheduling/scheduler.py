"""From an understood request and a registry snapshot to an ordered list of endpoints.

The model's profile (:class:`~extproc.core.scheduling.profile.Profile`) runs its filters,
scorers and picker over the model's endpoints. The leading cacheable filters run once
per snapshot, model and version; the rest run per request.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from extproc.core import capabilities
from extproc.core.admission import Admission, PriorityClass, admit
from extproc.core.capabilities import Requirements
from extproc.core.errors import ModelNotFound, NoHealthyDeployment, VersionNotFound, shown
from extproc.core.request import InferenceRequest
from extproc.core.scheduling.framework import Candidate, SchedulingRequest
from extproc.core.scheduling.profile import Profile, ScheduleTrace, candidate_signals
from extproc.core.signals import SignalBoard
from extproc.core.snapshot import ModelEntry, Snapshot


@dataclass(frozen=True, slots=True)
class Decision:
    model: str
    version: str
    deployment: str
    endpoints: tuple[str, ...]
    """Primary first, then ordered fallbacks (``ip:port``)."""
    picker: str
    candidates: int
    requested_version: str | None = None
    capabilities: Requirements = ()
    within_subset: bool = False
    profile: str = "default"
    priority: str = ""
    """The request's priority class (admission)."""
    budget_at_risk: bool = False
    """No endpoint was predicted to meet the request's time-to-first-token budget."""
    cost: float | None = None
    """The request's estimated cost on the picked deployment (``None``: none declared)."""

    @property
    def reason(self) -> str:
        """Why this endpoint, in words (built on demand: only logs and ``explain`` read it)."""
        caps = self.capabilities
        return (
            f"{self.picker} over {self.candidates} endpoint(s) of model {self.model!r}"
            f" version {self.requested_version or 'any'}"
            + (f" with {capabilities.describe(caps)}" if caps else "")
            + (" within the proxy's subset" if self.within_subset else "")
        )


def candidates_of(model: ModelEntry) -> tuple[Candidate, ...]:
    """Every endpoint of every deployment of ``model``, before any filter."""
    return tuple(Candidate(e, d) for d in model.deployments for e in d.endpoints)


class Scheduler:
    """The profiles of one routing file and which model uses which."""

    def __init__(
        self,
        profiles: Mapping[str, Profile],
        default: str,
        by_model: Mapping[str, str],
        admission: Admission | None = None,
        default_completion_tokens: int = 256,
    ):
        self.profiles = dict(profiles)
        self.default = self.profiles[default]
        self._by_model = {model: self.profiles[name] for model, name in by_model.items()}
        self.admission = admission
        """Quotas, priority classes and budgets (``None``: every request admitted)."""
        self.default_completion_tokens = default_completion_tokens
        self._snapshot: Snapshot | None = None
        self._cache: dict[tuple[str, str, str | None], tuple[Candidate, ...] | str] = {}

    def __repr__(self) -> str:
        overrides = {m: p.name for m, p in self._by_model.items()}
        return (
            f"Scheduler(profiles={sorted(self.profiles)}, default={self.default.name!r}, "
            f"models={overrides}, cached_pools={len(self._cache)})"
        )

    def profile_for(self, model: str) -> Profile:
        return self._by_model.get(model, self.default)

    def lookup(self, request: InferenceRequest, snapshot: Snapshot) -> ModelEntry:
        """The registered model for ``request`` (404 if the model or version is unknown)."""
        model = snapshot.models.get(request.model)
        if model is None:
            raise ModelNotFound(
                f"model {shown(request.model)} is not registered", field=request.model_field
            )
        version = request.version
        if version is not None and version not in model.versions:
            raise VersionNotFound(
                f"model {model.name!r} has no version {shown(version)} "
                f"(registered: {', '.join(model.versions)})"
            )
        return model

    def _cached_pool(
        self, snapshot: Snapshot, profile: Profile, req: SchedulingRequest
    ) -> tuple[Candidate, ...]:
        """The candidates after the profile's cacheable filters, once per snapshot."""
        if snapshot is not self._snapshot:
            self._snapshot = snapshot
            self._cache = {}
        key = (profile.name, req.model.name, req.version)
        pool = self._cache.get(key)
        if pool is None:
            try:
                pool = profile.apply_filters(req, candidates_of(req.model), profile.cached_filters)
            except NoHealthyDeployment as exc:
                pool = exc.message
            self._cache[key] = pool
        if isinstance(pool, str):
            raise NoHealthyDeployment(pool)
        return pool

    def schedule(
        self,
        request: InferenceRequest,
        snapshot: Snapshot,
        subset: Collection[str] | None = None,
        trace: ScheduleTrace | None = None,
        signals: SignalBoard | None = None,
        priority: PriorityClass | None = None,
        budget_ms: float | None = None,
    ) -> Decision:
        """Primary and fallback endpoints for ``request``: 404 unknown model or version,
        503 when no endpoint passes the filters, 429 when admission sheds it. ``trace``
        records every step. ``budget_ms`` (the budget header) overrides the model's
        objective."""
        model = self.lookup(request, snapshot)
        profile = self._by_model.get(model.name, self.default)
        caps = request.capabilities
        req = SchedulingRequest(
            request=request,
            model=model,
            version=request.version,
            capabilities=caps,
            subset=None if subset is None else frozenset(subset),
            signals=signals if signals is not None else SignalBoard(),  # no live signals
            now=time.monotonic(),
            priority=priority,
            default_completion_tokens=self.default_completion_tokens,
        )
        adm = self.admission
        if trace is None:
            cands = self._cached_pool(snapshot, profile, req)
            cands = profile.apply_filters(req, cands, profile.request_filters)
        else:  # explain: every filter in turn, nothing cached; every endpoint's signals
            trace.profile = profile.name
            every = candidates_of(model)
            trace.signals = {c.address: candidate_signals(req, c) for c in every}
            cands = profile.apply_filters(req, every, profile.filters, trace)
        if adm is not None:
            req.budget_ms = budget_ms if budget_ms is not None else adm.objectives.get(model.name)
            cands = admit(adm, req, cands, trace)
        picked = profile.pick((model.name, req.version, caps), req, cands, trace)
        if not picked:
            raise NoHealthyDeployment(
                f"picker {profile.picker.name!r} chose none of the {len(cands)} endpoint(s) "
                f"of model {model.name!r}"
            )
        dep = picked[0].deployment
        return Decision(
            model=model.name,
            version=dep.version,
            deployment=dep.name,
            endpoints=tuple([c.address for c in picked]),
            picker=profile.picker.name,
            candidates=len(cands),
            requested_version=req.version,
            capabilities=caps,
            within_subset=subset is not None,
            profile=profile.name,
            priority=(priority or adm.default).name if adm is not None else "",
            budget_at_risk=req.budget_at_risk,
            cost=None if dep.cost is None else req.cost(dep),
        )
