"""The registry snapshot: every model, its deployments and their endpoints at one moment.

Registry backends (:mod:`extproc.control.registry`) build these immutable values off
the request path; the hot path only reads them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One serving address of a deployment, always ``ip:port`` (Envoy's ORIGINAL_DST needs it)."""

    address: str
    deployment: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Cost:
    """What a request costs on a deployment, in the user's currency unit."""

    per_request: float = 0.0
    per_1k_prompt_tokens: float = 0.0
    per_1k_completion_tokens: float = 0.0

    def estimate(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (
            self.per_request
            + prompt_tokens / 1000 * self.per_1k_prompt_tokens
            + completion_tokens / 1000 * self.per_1k_completion_tokens
        )


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str
    model: str
    version: str
    endpoints: tuple[Endpoint, ...]
    weight: int = 1
    tags: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    excluded: tuple[tuple[str, str], ...] = ()
    """Known endpoints that may not receive traffic, with why (e.g. ``critical``)."""
    max_inflight: int | None = None
    """Capacity quota: requests in flight on the whole deployment (``None``: no quota)."""
    max_inflight_per_endpoint: int | None = None
    cost: Cost | None = None

    @property
    def routable(self) -> bool:
        return self.enabled and self.weight > 0 and bool(self.endpoints)

    def __repr__(self) -> str:
        state = (
            "routable" if self.routable else ("disabled" if not self.enabled else "no endpoints")
        )
        excluded = f", excluded={list(self.excluded)}" if self.excluded else ""
        return (
            f"Deployment({self.name!r}, model={self.model!r}, version={self.version!r}, "
            f"endpoints={[e.address for e in self.endpoints]}{excluded}, "
            f"weight={self.weight}, {state})"
        )


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    protocol: str
    versions: tuple[str, ...]
    deployments: tuple[Deployment, ...]
    spec: str | None = None
    """Name of the spec to validate with, when the registry names one (Consul meta ``spec``);
    otherwise the model's own name."""

    def __repr__(self) -> str:
        n = sum(1 for d in self.deployments if d.routable)
        return (
            f"ModelEntry({self.name!r}, protocol={self.protocol}, versions={list(self.versions)}, "
            f"deployments={len(self.deployments)} ({n} routable))"
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An immutable view of every model and its deployments at one moment."""

    models: Mapping[str, ModelEntry]
    source: str
    generation: int = 0
    created_at: float = field(default_factory=time.time)

    def __repr__(self) -> str:
        deps = sum(len(m.deployments) for m in self.models.values())
        eps = sum(len(d.endpoints) for m in self.models.values() for d in m.deployments)
        return (
            f"Snapshot(source={self.source!r}, generation={self.generation}, "
            f"models={len(self.models)}, deployments={deps}, endpoints={eps})"
        )
