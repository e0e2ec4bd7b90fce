"""What the xDS server serves: the current resources of each type, with a version.

:class:`ResourceCache` holds one immutable :class:`TypeSnapshot` per type URL. A version
is a hash of the serialized resources, so every router that compiles the same routing
file and registry snapshot serves the same versions: an Envoy that fails over from one
router to another sees no change and re-applies nothing. Streams wait on
:meth:`ResourceCache.changed` and compare versions; they never block the publisher.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from google.protobuf import any_pb2
from google.protobuf.message import Message

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINTS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTES = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
TYPE_NAMES = {CLUSTER: "cds", ENDPOINTS: "eds", ROUTES: "rds", LISTENER: "lds"}
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})
"""SotW types Envoy subscribes to as a whole; the others name the resources they want."""


@dataclass(frozen=True, slots=True)
class TypeSnapshot:
    """Every resource of one type at one moment, packed, by name."""

    type_url: str
    version: str
    resources: Mapping[str, any_pb2.Any]

    def select(self, names: Iterable[str]) -> list[any_pb2.Any]:
        """The named resources that exist (all of them when ``names`` is empty)."""
        wanted = list(names)
        if not wanted or self.type_url in WILDCARD_TYPES:
            return [self.resources[n] for n in sorted(self.resources)]
        return [self.resources[n] for n in sorted(set(wanted)) if n in self.resources]

    def __repr__(self) -> str:
        kind = TYPE_NAMES.get(self.type_url, self.type_url)
        return f"TypeSnapshot({kind}, version={self.version}, resources={len(self.resources)})"


def pack(type_url: str, resources: Mapping[str, Message]) -> TypeSnapshot:
    """Pack ``resources`` (name -> message) with a content-derived version."""
    packed: dict[str, any_pb2.Any] = {}
    digest = hashlib.sha256()
    for name in sorted(resources):
        a = any_pb2.Any()
        a.Pack(resources[name])
        packed[name] = a
        digest.update(name.encode())
        digest.update(a.value)
    return TypeSnapshot(type_url, digest.hexdigest()[:16], packed)


class ResourceCache:
    """The current :class:`TypeSnapshot` of each type; :meth:`set` wakes every stream.

    It also knows, per open stream, up to which generation each type is *settled*
    (Envoy ACKed or NACKed it), so a publisher can wait until every Envoy has a change
    before the router starts relying on it (:meth:`settled`).
    """

    def __init__(self) -> None:
        self._types: dict[str, TypeSnapshot] = {}
        self._changed = asyncio.Event()
        self.generation = 0
        self._born: dict[tuple[str, str], int] = {}
        """(type, version) -> the generation that published it (recent ones)."""
        self._settled: dict[int, dict[str, int]] = {}
        """stream -> type -> the generation Envoy last settled on."""
        self._acked = asyncio.Event()

    def __repr__(self) -> str:
        return (
            f"ResourceCache(generation={self.generation}, streams={len(self._settled)}, "
            f"types={list(self._types.values())})"
        )

    def get(self, type_url: str) -> TypeSnapshot | None:
        return self._types.get(type_url)

    @property
    def ready(self) -> bool:
        """True once resources have been published (streams answer only then)."""
        return bool(self._types)

    def set(self, snapshots: Iterable[TypeSnapshot]) -> bool:
        """Publish a consistent set of types at once (those whose version changed) and wake
        every stream; True when anything changed."""
        fresh = []
        for snap in snapshots:
            old = self._types.get(snap.type_url)
            if old is None or old.version != snap.version:
                self._types[snap.type_url] = snap
                fresh.append(snap)
        changed = bool(fresh)
        if changed:
            self.generation += 1
            for snap in fresh:  # a version seen before (a flip back) is born again now
                self._born[(snap.type_url, snap.version)] = self.generation
            if len(self._born) > 256:  # only recent versions are ever ACKed
                oldest = sorted(self._born.items(), key=lambda kv: kv[1])[:128]
                for key, _ in oldest:
                    del self._born[key]
            wake, self._changed = self._changed, asyncio.Event()
            wake.set()
        return changed

    async def changed(self, seen: int) -> int:
        """Wait until the cache generation moves past ``seen``; the new generation."""
        while self.generation == seen:
            await self._changed.wait()
        return self.generation

    # -- what Envoys have -------------------------------------------------------------

    def stream_opened(self, stream: int) -> None:
        self._settled[stream] = {}

    def stream_closed(self, stream: int) -> None:
        self._settled.pop(stream, None)
        self._wake_waiters()

    def settle(self, stream: int, type_url: str, version: str) -> None:
        """Envoy on ``stream`` ACKed or NACKed ``version`` of ``type_url``."""
        born = self._born.get((type_url, version))
        if born is not None and stream in self._settled:
            self._settled[stream][type_url] = born
            self._wake_waiters()

    def _wake_waiters(self) -> None:
        wake, self._acked = self._acked, asyncio.Event()
        wake.set()

    def _all_settled(self, types: Iterable[str], generation: int) -> bool:
        return all(per.get(t, 0) >= generation for per in self._settled.values() for t in types)

    async def settled(self, types: Iterable[str], generation: int, timeout_s: float) -> bool:
        """Wait until every open stream settled ``types`` at ``generation`` or later (True),
        or ``timeout_s`` passed (False). No stream: True at once."""
        wanted = tuple(types)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._all_settled(wanted, generation):
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._acked.wait(), left)
            except TimeoutError:
                return False
        return True
