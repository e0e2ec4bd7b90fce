"""Model registries: the interface, the routing-file backend and (later) Consul."""

from __future__ import annotations

from extproc.registry.base import Deployment, Endpoint, ModelEntry, Registry, Snapshot
from extproc.registry.static import StaticRegistry, build_snapshot

__all__ = [
    "Deployment",
    "Endpoint",
    "ModelEntry",
    "Registry",
    "Snapshot",
    "StaticRegistry",
    "build_snapshot",
]
