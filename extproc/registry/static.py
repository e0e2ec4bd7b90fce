"""The routing-file registry: deployments and endpoints exactly as the file lists them."""

from __future__ import annotations

import asyncio
import socket

from extproc.config import Config
from extproc.config import Endpoint as EndpointConfig
from extproc.errors import ConfigError
from extproc.registry.base import Deployment, Endpoint, ModelEntry, Registry, Snapshot


async def resolve_endpoint(ep: EndpointConfig) -> str:
    """``ip:port`` for an endpoint; hostnames are resolved here, never by Envoy per request."""
    if ep.is_ip:
        return ep.address
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(ep.host, ep.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(ep.address, [f"cannot resolve host {ep.host!r}: {exc}"]) from exc
    family, _, _, _, sockaddr = infos[0]
    host = str(sockaddr[0])
    return f"[{host}]:{ep.port}" if family == socket.AF_INET6 else f"{host}:{ep.port}"


async def build_snapshot(config: Config, source: str, generation: int = 0) -> Snapshot:
    """Turn a validated config into a snapshot, resolving hostnames once."""
    by_model: dict[str, list[Deployment]] = {name: [] for name in config.models}
    for dep in config.deployments:
        addresses = [await resolve_endpoint(ep) for ep in dep.endpoints]
        by_model[dep.model].append(
            Deployment(
                name=dep.name,
                model=dep.model,
                version=dep.version,
                endpoints=tuple(Endpoint(a, dep.name, dep.weight) for a in addresses),
                weight=dep.weight,
                tags=dict(dep.tags),
                enabled=dep.enabled,
            )
        )
    models = {
        name: ModelEntry(name, m.protocol.value, m.versions, tuple(by_model[name]))
        for name, m in config.models.items()
    }
    return Snapshot(models=models, source=source, generation=generation)


class StaticRegistry(Registry):
    """Serves the routing file's deployments; ``update`` swaps in a reloaded file."""

    def __init__(self, config: Config, source: str, *, generation: int = 0) -> None:
        super().__init__()
        self._config = config
        self._source = source
        self._generation = generation
        self._snapshot: Snapshot | None = None

    async def start(self) -> None:
        self._snapshot = await build_snapshot(self._config, self._source, self._generation)

    async def stop(self) -> None:
        return None

    @property
    def ready(self) -> bool:
        return self._snapshot is not None

    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            raise RuntimeError("StaticRegistry.start() has not run")
        return self._snapshot

    def __repr__(self) -> str:
        return f"StaticRegistry(source={self._source!r}, snapshot={self._snapshot!r})"

    def describe(self) -> dict[str, object]:
        return {"type": "static", "source": self._source}
