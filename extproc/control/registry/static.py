"""The routing-file registry: deployments and endpoints exactly as the file lists them."""

from __future__ import annotations

from extproc.control.errors import ConfigError
from extproc.control.net import ResolveError, Resolver
from extproc.control.registry.base import Registry, RegistryInputs
from extproc.core.snapshot import Cost, Deployment, Endpoint, ModelEntry, Snapshot


async def build_snapshot(
    inputs: RegistryInputs, resolver: Resolver, generation: int = 0
) -> Snapshot:
    """The routing file's deployments as a snapshot, hostnames resolved to ``ip:port``;
    :class:`ConfigError` names every endpoint that does not resolve."""
    by_model: dict[str, list[Deployment]] = {name: [] for name in inputs.models}
    problems: list[str] = []
    for i, dep in enumerate(inputs.deployments):
        addresses = []
        for j, ep in enumerate(dep.endpoints):
            try:
                addresses.append(await resolver.address(ep.host, ep.port))
            except ResolveError as exc:
                problems.append(f"deployments[{i}].endpoints[{j}]: {exc}")
        by_model.setdefault(dep.model, []).append(
            Deployment(
                name=dep.name,
                model=dep.model,
                version=dep.version,
                endpoints=tuple(Endpoint(a, dep.name, dep.weight) for a in addresses),
                weight=dep.weight,
                tags=dict(dep.tags),
                enabled=dep.enabled,
                max_inflight=dep.max_inflight,
                max_inflight_per_endpoint=dep.max_inflight_per_endpoint,
                cost=None if dep.cost is None else Cost(**dep.cost.model_dump()),
            )
        )
    if problems:
        raise ConfigError(inputs.source, problems)
    models = {
        name: ModelEntry(name, m.protocol, m.versions, tuple(by_model[name]))
        for name, m in inputs.models.items()
    }
    return Snapshot(models=models, source=inputs.source, generation=generation)


class StaticRegistry(Registry):
    """Serves the routing file's deployments; a reload builds a new one."""

    def __init__(
        self, inputs: RegistryInputs, *, generation: int = 0, resolver: Resolver | None = None
    ) -> None:
        super().__init__(inputs, generation=generation)
        self._resolver = resolver

    async def start(self) -> None:
        resolver = self._resolver or Resolver()
        self._publish(await build_snapshot(self._inputs, resolver, self._generation))

    async def stop(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"StaticRegistry(source={self._inputs.source!r}, snapshot={self._snapshot!r})"

    def describe(self) -> dict[str, object]:
        return {"type": "static", "source": self._inputs.source}
