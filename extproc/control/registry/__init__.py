"""Model registries: the interface, the routing-file backend and Consul."""

from __future__ import annotations

from extproc.control.registry.base import Registry, RegistryInputs
from extproc.control.registry.static import StaticRegistry, build_snapshot
from extproc.control.schema import RegistryConfig


def make_registry(
    config: RegistryConfig, inputs: RegistryInputs, *, generation: int = 0
) -> Registry:
    """The backend the routing file selects (not started)."""
    if config.type == "consul":
        from extproc.control.registry.consul import ConsulRegistry

        return ConsulRegistry(config.consul, inputs, generation=generation)
    return StaticRegistry(inputs, generation=generation)


__all__ = ["Registry", "RegistryInputs", "StaticRegistry", "build_snapshot", "make_registry"]
