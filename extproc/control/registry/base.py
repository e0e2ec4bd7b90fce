"""Registry interface: where each model's deployments live and whether they can serve.

A registry publishes immutable :class:`~extproc.core.snapshot.Snapshot` values; the
server compiles each into a new :class:`~extproc.core.flow.RouterState`, so the request
path reads one attribute and never waits on the registry. Backends (the routing file,
Consul) build a new snapshot and tell their listeners.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from extproc.control.compile import CompiledRouting
from extproc.control.schema import DeploymentConfig, ModelConfig, RegistryConfig
from extproc.core.snapshot import Snapshot

SnapshotListener = Callable[[Snapshot], None]


@dataclass(frozen=True, slots=True)
class RegistryInputs:
    """What a registry needs from the routing file, and nothing else."""

    source: str
    models: Mapping[str, ModelConfig]
    """Declared models: protocol and versions."""
    deployments: tuple[DeploymentConfig, ...]
    """The file's deployments (the static registry's, Consul's start-up fallback)."""
    spec_names: frozenset[str]
    """Specs a registry entry may name (Consul ``ServiceMeta.spec``)."""

    @classmethod
    def of(cls, compiled: CompiledRouting) -> RegistryInputs:
        """What a compiled routing file gives its registry."""
        config = compiled.config
        return cls(
            compiled.source, dict(config.models), config.deployments, frozenset(compiled.specs)
        )


class Registry(abc.ABC):
    """A source of snapshots. ``start`` loads the first one; ``snapshot`` never blocks.

    Backends that change over time call :meth:`_publish` with each new snapshot;
    listeners (the server's state and metrics) are told synchronously.
    """

    def __init__(self, inputs: RegistryInputs, *, generation: int = 0) -> None:
        self._inputs = inputs
        self._generation = generation
        self._snapshot: Snapshot | None = None
        self._listeners: list[SnapshotListener] = []

    def add_listener(self, listener: SnapshotListener) -> None:
        self._listeners.append(listener)

    def _publish(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        for listener in self._listeners:
            listener(snapshot)

    @property
    def snapshot(self) -> Snapshot | None:
        """The latest snapshot; ``None`` until the backend has synced once."""
        return self._snapshot

    @property
    def ready(self) -> bool:
        """True once a usable snapshot exists (gRPC readiness follows this)."""
        return self._snapshot is not None

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    def reusable_for(self, config: RegistryConfig) -> bool:
        """Whether a reload with registry settings ``config`` can keep this registry (and
        its watches), only learning the new routing file with :meth:`reconfigure`."""
        return False

    async def reconfigure(self, inputs: RegistryInputs) -> None:
        """Adopt a reloaded routing file (backends that :meth:`reusable_for` say so)."""
        raise NotImplementedError(f"{type(self).__name__} is rebuilt on reload")

    @property
    def staleness_s(self) -> float:
        """How old the snapshot may be; 0 for backends that are always in sync."""
        return 0.0

    def describe(self) -> dict[str, object]:
        """Backend state for ``explain`` and logs."""
        return {"type": type(self).__name__}
