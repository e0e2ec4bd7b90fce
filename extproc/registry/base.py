"""Registry interface: where each model's deployments live and whether they can serve.

A registry publishes immutable :class:`Snapshot` values. The request path reads
the current snapshot with one attribute load and never waits on the registry;
backends (the routing file now, Consul next) build a new snapshot and swap it in.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from extproc.config import Config


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One serving address of a deployment, always ``ip:port`` (Envoy's ORIGINAL_DST needs it)."""

    address: str
    deployment: str
    weight: int = 1


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


SnapshotListener = Callable[[Snapshot], None]


class Registry(abc.ABC):
    """A source of snapshots. ``start`` loads the first one; ``snapshot`` never blocks.

    Backends that change over time call :meth:`_publish` with each new snapshot;
    listeners (the server's metrics and health) are told synchronously.
    """

    def __init__(self) -> None:
        self._listeners: list[SnapshotListener] = []

    def add_listener(self, listener: SnapshotListener) -> None:
        self._listeners.append(listener)

    def _notify(self, snapshot: Snapshot) -> None:
        for listener in self._listeners:
            listener(snapshot)

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @property
    @abc.abstractmethod
    def snapshot(self) -> Snapshot: ...

    @property
    def ready(self) -> bool:
        """True once a usable snapshot exists (gRPC readiness follows this)."""
        return True

    async def reconfigure(self, config: Config) -> None:
        """Adopt new routing rules without restarting (backends that keep watches)."""
        raise NotImplementedError

    @property
    def staleness_s(self) -> float:
        """How old the snapshot may be; 0 for backends that are always in sync."""
        return 0.0

    def describe(self) -> dict[str, object]:
        """Backend state for ``explain`` and logs."""
        return {"type": type(self).__name__}
