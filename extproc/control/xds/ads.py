"""The Aggregated Discovery Service (state of the world) Envoy fetches its config from.

One :class:`AdsServicer` serves any number of Envoys; each ADS stream keeps, per type,
what Envoy subscribed to, what was sent (version, nonce) and whether Envoy is waiting
for an answer. The protocol, as Envoy speaks it:

* A request whose ``response_nonce`` is not the last one sent on the stream for its
  type is stale (Envoy is answering an older response): it is ignored.
* A request carrying the last nonce ACKs that response, or NACKs it when it has
  ``error_detail``: Envoy keeps its previous config, the rejection is logged with
  Envoy's message and counted, and that version is never sent again on this stream.
* After each request, Envoy waits; the servicer answers as soon as it has a version
  Envoy does not have (at once, or when the cache changes).
* Clusters go out before endpoints, endpoints before routes, so Envoy never routes to
  a cluster it does not know.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from envoy.config.core.v3 import base_pb2 as core
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3 import discovery_pb2 as ds

from extproc.control.xds.cache import (
    CLUSTER,
    ENDPOINTS,
    LISTENER,
    ROUTES,
    TYPE_NAMES,
    WILDCARD_TYPES,
    ResourceCache,
)

log = logging.getLogger("extproc.control.xds")

ORDER = (CLUSTER, ENDPOINTS, LISTENER, ROUTES)


class XdsObserver(Protocol):
    """Where the servicer reports what happens (the server's metrics)."""

    def streams(self, delta: int) -> None: ...

    def sent(self, kind: str) -> None: ...

    def acked(self, kind: str) -> None: ...

    def nacked(self, kind: str) -> None: ...


class NullObserver:
    def streams(self, delta: int) -> None:
        return None

    def sent(self, kind: str) -> None:
        return None

    def acked(self, kind: str) -> None:
        return None

    def nacked(self, kind: str) -> None:
        return None


@dataclass(slots=True)
class _TypeState:
    names: tuple[str, ...] = ()
    sent_names: tuple[str, ...] | None = None
    sent_version: str = ""
    sent_nonce: str = ""
    nacked_version: str = ""
    envoy_version: str = ""
    waiting: bool = False
    rewarm: bool = False
    """EDS: clusters were (re)sent since the last EDS response. Envoy rebuilds a changed
    cluster and asks for its endpoints again with the *same* nonce and names, which
    looks like an ACK; unanswered, the cluster warms until ``initial_fetch_timeout``."""
    force: bool = False


@dataclass(slots=True)
class _Stream:
    id: int
    peer: str
    node: str = ""
    types: dict[str, _TypeState] = field(default_factory=dict)
    nonces: itertools.count[int] = field(default_factory=itertools.count)


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """``StreamAggregatedResources`` over a :class:`ResourceCache`."""

    def __init__(
        self, cache: ResourceCache, *, observer: XdsObserver | None = None, name: str = ""
    ) -> None:
        self.cache = cache
        self.observer: XdsObserver = observer or NullObserver()
        self.identifier = core.ControlPlane(identifier=name or "model-router")
        self.open_streams = 0
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"AdsServicer(streams={self.open_streams}, {self.cache!r})"

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[ds.DiscoveryRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        stream = _Stream(id=next(self._ids), peer=context.peer())
        self.cache.stream_opened(stream.id)
        self.open_streams += 1
        self.observer.streams(1)
        seen = self.cache.generation
        reading = asyncio.ensure_future(context.read())
        changing = asyncio.ensure_future(self.cache.changed(seen))
        try:
            while True:
                done, _ = await asyncio.wait(
                    {reading, changing}, return_when=asyncio.FIRST_COMPLETED
                )
                if reading in done:
                    req = reading.result()
                    if req is grpc.aio.EOF:
                        return
                    await self._on_request(stream, req, context)
                    reading = asyncio.ensure_future(context.read())
                if changing in done:
                    seen = changing.result()
                    changing = asyncio.ensure_future(self.cache.changed(seen))
                await self._answer_waiting(stream, context)
        finally:
            reading.cancel()
            changing.cancel()
            self.cache.stream_closed(stream.id)
            self.open_streams -= 1
            self.observer.streams(-1)
            log.info("ADS stream closed", extra={"peer": stream.peer, "node": stream.node})

    async def _on_request(
        self,
        stream: _Stream,
        req: ds.DiscoveryRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        if req.node.id and not stream.node:
            stream.node = req.node.id
            log.info("ADS stream opened", extra={"peer": stream.peer, "node": stream.node})
        kind = TYPE_NAMES.get(req.type_url)
        if kind is None:
            log.warning("ADS request for an unserved type %s", req.type_url)
            return
        st = stream.types.setdefault(req.type_url, _TypeState())
        if req.response_nonce and req.response_nonce != st.sent_nonce:
            return  # stale: answers a response older than the last one sent
        if req.response_nonce:
            self.cache.settle(stream.id, req.type_url, st.sent_version)
            if req.HasField("error_detail"):
                st.nacked_version = st.sent_version
                self.observer.nacked(kind)
                log.error(
                    "Envoy rejected %s version %s (it keeps its previous config): %s",
                    kind,
                    st.sent_version,
                    req.error_detail.message,
                    extra={"node": stream.node, "peer": stream.peer},
                )
            else:
                self.observer.acked(kind)
                if st.rewarm:
                    st.force = True
        st.envoy_version = req.version_info
        st.names = tuple(req.resource_names)
        st.waiting = True

    async def _answer_waiting(
        self, stream: _Stream, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        for type_url in ORDER:
            st = stream.types.get(type_url)
            snap = self.cache.get(type_url)
            if st is None or not st.waiting or snap is None:
                continue
            names_changed = type_url not in WILDCARD_TYPES and st.names != st.sent_names
            have = st.sent_version or st.envoy_version
            fresh = names_changed or st.force
            if snap.version == st.nacked_version and not fresh:
                continue  # never resend what Envoy refused
            if snap.version == have and not fresh:
                continue
            nonce = str(next(stream.nonces))
            await context.write(
                ds.DiscoveryResponse(
                    version_info=snap.version,
                    resources=snap.select(st.names),
                    type_url=type_url,
                    nonce=nonce,
                    control_plane=self.identifier,
                )
            )
            st.sent_version, st.sent_nonce, st.sent_names = snap.version, nonce, st.names
            st.waiting = st.rewarm = st.force = False
            if type_url == CLUSTER and ENDPOINTS in stream.types:
                stream.types[ENDPOINTS].rewarm = True
            self.observer.sent(TYPE_NAMES[type_url])
