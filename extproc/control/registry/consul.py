"""Consul as the model registry: where deployments live and whether they are healthy.

Mapping (documented in the README):

* A Consul service carrying the tag ``service_tag`` (default ``model-router``) holds
  deployments of models. Each instance's ``ServiceMeta`` says which:
  ``model`` (default: the service name), ``version`` (required), ``protocol``,
  ``deployment`` (default: ``<service>``), ``weight`` (default: ``Weights.Passing``),
  ``max_inflight``; every other meta key is a capability (``accelerator=a100``,
  ``max_context=8192``, ``domain=medical``) matched by ``x-model-capabilities``.
* The instance's address (``Service.Address``, else the node's) and port are the
  endpoint. Instances in maintenance, with a critical check, or (unless configured
  routable) a warning check are excluded, and shown as such in ``explain``/metrics.
* The routing file says how to route a model (protocol, versions, scheduling);
  Consul says where it lives. A model only in Consul is routed with defaults.

Watches use blocking queries: ``/v1/catalog/services`` for membership and one
``/v1/health/service/<name>`` per model service. Errors back off with full jitter.
If Consul becomes unreachable the last snapshot keeps serving; its age is exported
as ``model_router_registry_staleness_seconds``. For ``recovery_grace_s`` after a watch
answers again, a model version the new answers leave with no routable instance keeps
the instances it had (a Consul that lost its state is repopulated by re-registration
and anti-entropy, and a new check is critical until its first run): a registry blip
must not black-hole a model. Per version, so requests pinned to it are served;
unpinned requests may reach those instances too while another version is live again.
Envoy's health checks and ejection still guard them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Mapping
from typing import Any

from extproc.control.errors import ConfigError
from extproc.control.net import ResolveError, Resolver
from extproc.control.registry.base import Registry, RegistryInputs
from extproc.control.registry.consul_api import ConsulClient, ConsulSettings, ConsulUnavailable
from extproc.control.registry.static import build_snapshot
from extproc.control.schema import ConsulConfig, RegistryConfig
from extproc.core.snapshot import Cost, Deployment, Endpoint, ModelEntry, Snapshot

log = logging.getLogger("extproc.control.registry.consul")

RESERVED_META = frozenset(
    {"model", "version", "protocol", "deployment", "weight", "max_inflight", "spec",
     "cost_per_request", "cost_per_1k_prompt_tokens", "cost_per_1k_completion_tokens"}
)  # fmt: skip


def _number(meta: Mapping[str, str], key: str) -> float | None:
    """A numeric ServiceMeta value (``None``: absent or not a non-negative number)."""
    raw = meta.get(key)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        log.warning("Consul meta %s=%r is not a number; ignored", key, raw)
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _cost(meta: Mapping[str, str]) -> Cost | None:
    parts = {
        k: _number(meta, f"cost_{k}")
        for k in ("per_request", "per_1k_prompt_tokens", "per_1k_completion_tokens")
    }
    if all(v is None for v in parts.values()):
        return None
    return Cost(**{k: v or 0.0 for k, v in parts.items()})


def instance_state(checks: list[Mapping[str, Any]]) -> str:
    """passing / warning / critical / maintenance, from an instance's checks."""
    state = "passing"
    for c in checks:
        cid = str(c.get("CheckID", ""))
        status = c.get("Status")
        if cid == "_node_maintenance" or cid.startswith("_service_maintenance:"):
            return "maintenance"
        if status == "critical":
            state = "critical"
        elif status == "warning" and state == "passing":
            state = "warning"
    return state


def _versions(held: dict[str, list[str]]) -> str:
    """``chat version 1, 2; embed version 3`` for logs."""
    return "; ".join(f"{model} version {', '.join(vs)}" for model, vs in held.items())


class _Backoff:
    def __init__(self, base: float = 0.5, cap: float = 10.0) -> None:
        self.base, self.cap, self.failures = base, cap, 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap, self.base * 2**self.failures))  # full jitter

    def reset(self) -> None:
        self.failures = 0


class ConsulRegistry(Registry):
    def __init__(
        self,
        consul: ConsulConfig,
        inputs: RegistryInputs,
        *,
        generation: int = 0,
        resolver: Resolver | None = None,
    ) -> None:
        super().__init__(inputs, generation=generation)
        self._cfg = consul
        self._resolver = resolver or Resolver()
        self._client: ConsulClient | None = None
        self._services: dict[str, list[dict[str, Any]]] = {}  # name -> health entries
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._synced = asyncio.Event()
        self._catalog_seen = False
        self._failing: dict[str, float] = {}  # watch -> when it started failing
        self._down_since: float | None = None
        self._from_file = False
        self._rebuild_lock = asyncio.Lock()
        self._recovered_at: float | None = None  # when a failing watch last answered again
        self._held_over: dict[str, list[str]] = {}  # model -> versions on pre-outage instances
        self._grace_timer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "reachable" if self._down_since is None else "unreachable"
        return (
            f"ConsulRegistry({self._client!r}, {state}, services={sorted(self._services)}, "
            f"staleness={self.staleness_s:.1f}s, snapshot={self._snapshot!r})"
        )

    # -- Registry interface ------------------------------------------------------------

    @property
    def staleness_s(self) -> float:
        """How old the snapshot may be: 0 while every watch is in sync (a parked blocking
        query is fresh until it breaks), else seconds since the first failing watch
        failed: the snapshot's real age, whatever the queries' wait."""
        if not self._failing:
            return 0.0
        return time.monotonic() - min(self._failing.values())

    def describe(self) -> dict[str, object]:
        return {
            "type": "consul",
            "address": self._client.settings.base_url if self._client else None,
            "reachable": self._down_since is None,
            "staleness_s": round(self.staleness_s, 3),
            "from_file": self._from_file,
            "services": sorted(self._services),
            "held_over": dict(self._held_over),
        }

    async def start(self) -> None:
        self._client = ConsulClient(ConsulSettings.resolve(self._cfg))
        await self._client.start()
        self._spawn(self._watch_catalog(), "consul-catalog")
        try:
            await asyncio.wait_for(self._synced.wait(), self._cfg.startup_timeout_s)
        except TimeoutError:
            if self._cfg.fallback_to_file:
                log.warning("Consul not synced at start-up; routing on the file's deployments")
                self._from_file = True
                try:
                    fallback = await build_snapshot(self._inputs, self._resolver, self._generation)
                except ConfigError as exc:
                    log.error("cannot route on the file's deployments: %s", exc)
                else:
                    self._publish(fallback)
            else:
                log.warning("Consul not synced at start-up; NOT_SERVING until it answers")

    def reusable_for(self, config: RegistryConfig) -> bool:
        """Same Consul settings: keep the watches, only learn the new routing file."""
        return config.type == "consul" and config.consul == self._cfg

    async def reconfigure(self, inputs: RegistryInputs) -> None:
        self._inputs = inputs
        if self._catalog_seen:
            await self._rebuild()

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._watches.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    # -- watches -----------------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _ok(self, watch: str) -> None:
        if self._failing.pop(watch, None) is not None:
            self._recovered_at = time.monotonic()
        if self._down_since is not None and not self._failing:
            log.warning(
                "Consul reachable again after %.1fs; resuming live updates",
                time.monotonic() - self._down_since,
            )
            self._down_since = None

    def _failed(self, watch: str, exc: Exception) -> None:
        self._failing.setdefault(watch, time.monotonic())
        if self._down_since is None:  # log once per outage, not per retry or per watch
            self._down_since = time.monotonic()
            log.error("Consul unreachable (%s); routing on the last snapshot", exc)

    async def _watch_catalog(self) -> None:
        assert self._client is not None
        index, backoff = 0, _Backoff()
        while True:
            try:
                data, index = await self._client.blocking_get(
                    "/v1/catalog/services", index, self._cfg.wait_s
                )
            except ConsulUnavailable as exc:
                self._failed("catalog", exc)
                # The next query must not block: a restarted Consul's index may be lower
                # than ours (it would park the query for the whole wait), and after an
                # error Consul's docs say to start over from index 0.
                index = 0
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            self._ok("catalog")
            wanted = {name for name, tags in data.items() if self._cfg.service_tag in (tags or [])}
            for name in set(self._watches) - wanted:
                self._watches.pop(name).cancel()
                self._services.pop(name, None)
                self._failing.pop(name, None)
            for name in wanted - set(self._watches):
                self._watches[name] = asyncio.create_task(
                    self._watch_service(name), name=f"consul-health-{name}"
                )
            self._catalog_seen = True
            await self._rebuild()

    async def _watch_service(self, name: str) -> None:
        assert self._client is not None
        index, backoff = 0, _Backoff()
        while True:
            try:
                data, index = await self._client.blocking_get(
                    f"/v1/health/service/{name}", index, self._cfg.wait_s
                )
            except ConsulUnavailable as exc:
                self._failed(name, exc)
                # The next query must not block: a restarted Consul's index may be lower
                # than ours (it would park the query for the whole wait), and after an
                # error Consul's docs say to start over from index 0.
                index = 0
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            self._ok(name)
            self._services[name] = list(data or [])
            await self._rebuild()

    # -- snapshot ----------------------------------------------------------------------

    def _hold_over(self, by_model: dict[str, list[Deployment]]) -> None:
        """Within ``recovery_grace_s`` of Consul answering again, a model version left with
        no routable instance keeps its deployments of the last snapshot (logged, shown in
        ``describe``); a rebuild when the grace ends drops them if still absent. Per
        version: a request pinned to a version other versions' instances cannot serve."""
        held: dict[str, list[str]] = {}
        grace = self._cfg.recovery_grace_s
        since = None if self._recovered_at is None else time.monotonic() - self._recovered_at
        if self._snapshot is not None and since is not None and since < grace:
            for name, entry in self._snapshot.models.items():
                now = by_model.get(name, [])
                live = {d.version for d in now if d.routable}
                kept = [d for d in entry.deployments if d.routable and d.version not in live]
                if not kept:
                    continue
                ids = {(d.name, d.version) for d in kept}
                by_model[name] = [*kept, *(d for d in now if (d.name, d.version) not in ids)]
                held[name] = sorted({d.version for d in kept})
            if held and self._grace_timer is None:
                self._grace_timer = self._spawn(
                    self._end_grace(grace - since), "consul-recovery-grace"
                )
        if held and held != self._held_over:
            log.warning(
                "Consul answered again without routable instances of %s; keeping their "
                "last known instances for up to %.0fs (recovery_grace_s)", _versions(held), grace,
            )  # fmt: skip
        elif self._held_over and not held:
            log.warning("Consul recovery: %s routed on live instances again",
                        _versions(self._held_over))  # fmt: skip
        self._held_over = held

    async def _end_grace(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._grace_timer = None
        await self._rebuild()

    async def _address(self, host: str, port: int) -> str | None:
        try:
            return await self._resolver.address(host, port)
        except ResolveError as exc:
            log.error("Consul instance address: %s", exc)
            return None

    async def _rebuild(self) -> None:
        async with self._rebuild_lock:  # watches finish in any order; build one at a time
            await self._rebuild_locked()

    async def _rebuild_locked(self) -> None:
        if not self._catalog_seen or set(self._watches) - set(self._services):
            return  # not every watched service has answered once yet
        routable = set(self._cfg.routable_states)
        groups: dict[tuple[str, str, str], dict[str, Any]] = {}
        for service, entries in sorted(self._services.items()):
            for entry in entries:
                svc = entry.get("Service") or {}
                meta = {str(k): str(v) for k, v in (svc.get("Meta") or {}).items()}
                model = meta.get("model") or service
                version = meta.get("version")
                if not version:
                    log.warning("Consul instance %s of %s has no version meta; ignored",
                                svc.get("ID"), service)  # fmt: skip
                    continue
                host = svc.get("Address") or (entry.get("Node") or {}).get("Address") or ""
                address = await self._address(host, int(svc.get("Port") or 0))
                if address is None:
                    continue
                state = instance_state(entry.get("Checks") or [])
                tags = {k: v for k, v in meta.items() if k not in RESERVED_META}
                name = meta.get("deployment") or service
                g = groups.setdefault(
                    (model, version, name),
                    {
                        "protocol": meta.get("protocol"),
                        "spec": meta.get("spec"),
                        "max_inflight": _number(meta, "max_inflight"),
                        "cost": _cost(meta),
                        "tags": tags,
                        "eps": [],
                        "excluded": [],
                    },
                )
                try:
                    weight = int(meta.get("weight") or (svc.get("Weights") or {}).get("Passing", 1))
                except ValueError:
                    weight = 1
                if state in routable:
                    g["eps"].append(Endpoint(address, name, weight))
                else:
                    g["excluded"].append((address, state))
        models: dict[str, ModelEntry] = {}
        file_models = self._inputs.models
        by_model: dict[str, list[Deployment]] = {}
        protocols: dict[str, str] = {}
        spec_refs: dict[str, str] = {}
        for (model, version, name), g in groups.items():
            by_model.setdefault(model, []).append(
                Deployment(
                    name=name,
                    model=model,
                    version=version,
                    endpoints=tuple(g["eps"]),
                    weight=max((e.weight for e in g["eps"]), default=1),
                    tags=g["tags"],
                    excluded=tuple(g["excluded"]),
                    max_inflight=int(g["max_inflight"]) if g["max_inflight"] else None,
                    cost=g["cost"],
                )
            )
            if g["protocol"]:
                protocols.setdefault(model, g["protocol"])
            if g["spec"]:
                spec_refs.setdefault(model, g["spec"])
        self._hold_over(by_model)
        for name in sorted(set(file_models) | set(by_model)):
            deps = tuple(by_model.get(name, ()))
            declared = file_models[name].versions if name in file_models else ()
            versions = tuple(dict.fromkeys([*declared, *(d.version for d in deps)]))
            protocol = (
                file_models[name].protocol
                if name in file_models
                else protocols.get(name, "generic")
            )
            ref = spec_refs.get(name)
            if ref is not None and ref not in self._inputs.spec_names:
                log.warning(
                    "model %s: Consul meta names spec %r, which no spec file has", name, ref
                )
                ref = None
            models[name] = ModelEntry(name, protocol, versions, deps, spec=ref)
        gen = self._snapshot.generation + 1 if self._snapshot else self._generation
        self._from_file = False
        self._publish(Snapshot(models=models, source=f"consul {self._client!r}", generation=gen))
        self._synced.set()
