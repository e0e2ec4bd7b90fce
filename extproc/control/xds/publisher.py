"""Publishing a routing state to Envoy before the router relies on it (make before break).

The router's ext_proc decisions name a deployment's cluster and endpoints, so Envoy
must have them first. :meth:`XdsPublisher.publish` pushes the new clusters, endpoints
and routes, then waits (bounded) until every connected Envoy has ACKed the clusters
and endpoints; only then does the server swap the router's state. A deployment that
disappears keeps its cluster (and last endpoints) for ``linger_s``, so decisions made
on the previous state, still in flight in Envoy, never name a cluster Envoy dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from extproc.control.compile import CompiledRouting
from extproc.control.xds.cache import CLUSTER, ENDPOINTS, ROUTES, ResourceCache, pack
from extproc.control.xds.clusters import build_clusters
from extproc.control.xds.plan import plan
from extproc.control.xds.routes import ROUTE_CONFIG_NAME, build_routes
from extproc.core.snapshot import Snapshot

log = logging.getLogger("extproc.control.xds")


class XdsPublisher:
    def __init__(
        self,
        cache: ResourceCache,
        *,
        linger_s: float = 10.0,
        ack_timeout_s: float = 5.0,
        on_unacked: Callable[[], None] = lambda: None,
    ) -> None:
        self.cache = cache
        self._on_unacked = on_unacked
        """Told each publish that stopped waiting for an ACK (the server counts them)."""
        self.linger_s = linger_s
        self.ack_timeout_s = ack_timeout_s
        self._lingering: dict[
            str, tuple[float, cluster_pb2.Cluster, endpoint_pb2.ClusterLoadAssignment]
        ] = {}
        self._last: tuple[CompiledRouting, Snapshot] | None = None
        self._clusters: dict[str, cluster_pb2.Cluster] = {}
        self._endpoints: dict[str, endpoint_pb2.ClusterLoadAssignment] = {}
        self._expiry: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.unacked = 0
        """Publishes that timed out waiting for an Envoy's ACK (slow or stuck Envoys)."""

    def __repr__(self) -> str:
        return (
            f"XdsPublisher(clusters={len(self._clusters)}, lingering={sorted(self._lingering)}, "
            f"unacked={self.unacked}, {self.cache!r})"
        )

    def _with_lingering(
        self,
        clusters: dict[str, cluster_pb2.Cluster],
        endpoints: dict[str, endpoint_pb2.ClusterLoadAssignment],
    ) -> None:
        """Add clusters removed less than ``linger_s`` ago (with their last endpoints)."""
        now = time.monotonic()
        for name in set(self._clusters) - set(clusters):  # just removed: linger
            self._lingering[name] = (now + self.linger_s, self._clusters[name],
                                     self._endpoints[name])  # fmt: skip
        self._clusters, self._endpoints = dict(clusters), dict(endpoints)
        for name in list(self._lingering):
            until, cluster, cla = self._lingering[name]
            if name in clusters or until <= now:
                del self._lingering[name]
            else:
                clusters[name], endpoints[name] = cluster, cla

    async def publish(self, compiled: CompiledRouting, snapshot: Snapshot) -> None:
        """Push Envoy's resources for ``snapshot``; return once every connected Envoy has
        the clusters and endpoints, or ``ack_timeout_s`` passed first (``on_unacked``)."""
        self._last = (compiled, snapshot)
        clusters, endpoints = build_clusters(compiled.config, snapshot)
        self._with_lingering(clusters, endpoints)
        plans = plan(compiled, snapshot)
        retries = max(p.max_fallbacks for p in compiled.scheduler.profiles.values())
        routes = build_routes(compiled.config, snapshot, plans, retries)
        cds, eds = pack(CLUSTER, clusters), pack(ENDPOINTS, endpoints)
        wanted = [s.type_url for s in (cds, eds) if self._is_new(s.type_url, s.version)]
        changed = self.cache.set([cds, eds, pack(ROUTES, {ROUTE_CONFIG_NAME: routes})])
        self._schedule_expiry()
        if not changed or not wanted:
            return
        if not await self.cache.settled(wanted, self.cache.generation, self.ack_timeout_s):
            self.unacked += 1
            self._on_unacked()
            log.warning(
                "not every Envoy acknowledged the new clusters within %gs "
                "(envoy.xds_ack_timeout_s); routing on",
                self.ack_timeout_s,
            )

    def _is_new(self, type_url: str, version: str) -> bool:
        current = self.cache.get(type_url)
        return current is None or current.version != version

    def _schedule_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if not self._lingering:
            return
        due = min(until for until, _, _ in self._lingering.values()) - time.monotonic()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(max(due, 0.0) + 0.01, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        if self._last is not None:
            task = asyncio.get_running_loop().create_task(
                self.publish(*self._last), name="xds-linger-expiry"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
