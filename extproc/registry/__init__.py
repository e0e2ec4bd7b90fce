"""Model registries: the interface, the routing-file backend and (later) Consul."""

from __future__ import annotations

from typing import TYPE_CHECKING

from extproc.registry.base import Deployment, Endpoint, ModelEntry, Registry, Snapshot
from extproc.registry.static import StaticRegistry, build_snapshot

if TYPE_CHECKING:
    from extproc.config import Config


def make_registry(config: Config, source: str, *, generation: int = 0) -> Registry:
    """The backend the routing file selects (not started)."""
    if config.registry.type == "consul":
        from extproc.registry.consul import ConsulRegistry

        return ConsulRegistry(config, source, generation=generation)
    return StaticRegistry(config, source, generation=generation)


__all__ = [
    "Deployment",
    "Endpoint",
    "ModelEntry",
    "Registry",
    "Snapshot",
    "StaticRegistry",
    "build_snapshot",
    "make_registry",
]
