"""From an understood request and a registry snapshot to an ordered list of endpoints.

filters (routable, version, tags, proxy subset) -> picker -> primary + fallbacks.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from extproc import capabilities
from extproc.capabilities import Requirements
from extproc.config import Config
from extproc.errors import ModelNotFound, NoHealthyDeployment, VersionNotFound
from extproc.policies import make_picker
from extproc.policies.base import Picker
from extproc.protocols.base import InferenceRequest
from extproc.registry.base import Deployment, Endpoint, ModelEntry, Snapshot


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


def _matches(dep: Deployment, version: str | None, caps: Requirements) -> bool:
    if version is not None and dep.version != version:
        return False
    return capabilities.satisfied(caps, dep.tags)


def _pool(model: ModelEntry, version: str | None, caps: Requirements) -> tuple[Endpoint, ...]:
    """Endpoints of the model's routable deployments that match version and capabilities."""
    return tuple(
        e
        for d in model.deployments
        if d.routable and _matches(d, version, caps)
        for e in d.endpoints
    )


def _why_empty(model: ModelEntry, version: str | None, caps: Requirements) -> str:
    deps = model.deployments
    want = f"model {model.name!r}" + (f" version {version!r}" if version else "")
    if not deps:
        return f"{want} has no deployments"
    wrong_version = sum(1 for d in deps if version is not None and d.version != version)
    missing = sum(
        1
        for d in deps
        if (version is None or d.version == version) and not capabilities.satisfied(caps, d.tags)
    )
    not_routable = [d for d in deps if _matches(d, version, caps) and not d.routable]
    parts = []
    if wrong_version:
        parts.append(f"{wrong_version} of another version")
    if missing:
        parts.append(f"{missing} without capabilities {capabilities.describe(caps)}")
    for d in not_routable:
        why = (
            "disabled" if not d.enabled else "weight 0" if d.weight <= 0 else "no healthy endpoint"
        )
        states = ", ".join(f"{a} {s}" for a, s in d.excluded)
        parts.append(f"{d.name}: {why}" + (f" ({states})" if states else ""))
    return f"no routable deployment for {want}: " + "; ".join(parts)


class Scheduler:
    """Holds the pickers (and their state) for one configuration."""

    def __init__(self, config: Config) -> None:
        self._default = make_picker(config.scheduling.picker)
        self._max_fallbacks = config.scheduling.max_fallbacks
        self._per_model: dict[str, tuple[Picker, int]] = {
            name: (make_picker(m.scheduling.picker), m.scheduling.max_fallbacks)
            for name, m in config.models.items()
            if m.scheduling is not None
        }
        self._snapshot: Snapshot | None = None
        self._cache: dict[tuple[str, str | None], tuple[Endpoint, ...]] = {}

    def __repr__(self) -> str:
        return (
            f"Scheduler(default={self._default!r}, fallbacks={self._max_fallbacks}, "
            f"overrides={sorted(self._per_model)}, cached_pools={len(self._cache)})"
        )

    def _candidates(
        self, snapshot: Snapshot, model: ModelEntry, version: str | None, caps: Requirements
    ) -> tuple[Endpoint, ...]:
        if caps:  # client-chosen requirements: not cached (unbounded key space)
            return _pool(model, version, caps)
        if snapshot is not self._snapshot:
            self._snapshot = snapshot
            self._cache = {}
        key = (model.name, version)
        cands = self._cache.get(key)
        if cands is None:
            cands = self._cache[key] = _pool(model, version, ())
        return cands

    def lookup(self, request: InferenceRequest, snapshot: Snapshot) -> ModelEntry:
        """The registered model for ``request`` (404 if the model or version is unknown)."""
        model = snapshot.models.get(request.model)
        if model is None:
            raise ModelNotFound(
                f"model {request.model!r} is not registered", field=request.model_field
            )
        version = request.version
        if version is not None and version not in model.versions:
            raise VersionNotFound(
                f"model {model.name!r} has no version {version!r} "
                f"(registered: {', '.join(model.versions)})"
            )
        return model

    def schedule(
        self,
        request: InferenceRequest,
        snapshot: Snapshot,
        subset: Collection[str] | None = None,
    ) -> Decision:
        model = self.lookup(request, snapshot)
        version = request.version
        caps = request.capabilities
        cands = self._candidates(snapshot, model, version, caps)
        if not cands:
            raise NoHealthyDeployment(_why_empty(model, version, caps))
        if subset is not None:
            allowed = set(subset)
            cands = tuple(e for e in cands if e.address in allowed)
            if not cands:
                raise NoHealthyDeployment(
                    f"none of the {len(allowed)} endpoints in the proxy's subset hint "
                    f"can serve model {model.name!r}"
                )
        picker, fallbacks = self._per_model.get(model.name, (self._default, self._max_fallbacks))
        picked = picker.pick((model.name, version, caps), cands, 1 + fallbacks)
        primary = picked[0]
        dep = next(d for d in model.deployments if d.name == primary.deployment)
        return Decision(
            model=model.name,
            version=dep.version,
            deployment=dep.name,
            endpoints=tuple([e.address for e in picked]),
            picker=picker.name,
            candidates=len(cands),
            requested_version=version,
            capabilities=caps,
            within_subset=subset is not None,
        )
