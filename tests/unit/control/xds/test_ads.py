"""The ADS stream protocol, driven message by message (no sockets)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2 as ds
from google.rpc import status_pb2

from extproc.control.xds.ads import AdsServicer
from extproc.control.xds.cache import CLUSTER, ENDPOINTS, ResourceCache, pack


class FakeContext:
    """What the servicer uses of a grpc.aio context: read, write, peer."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.outbox: asyncio.Queue[ds.DiscoveryResponse] = asyncio.Queue()

    def peer(self) -> str:
        return "test"

    async def read(self) -> Any:
        return await self.inbox.get()

    async def write(self, msg: ds.DiscoveryResponse) -> None:
        await self.outbox.put(msg)


class Recorder:
    def __init__(self) -> None:
        self.events: Counter[str] = Counter()

    def streams(self, delta: int) -> None:
        self.events["streams"] += delta

    def sent(self, kind: str) -> None:
        self.events["sent:" + kind] += 1

    def acked(self, kind: str) -> None:
        self.events["ack:" + kind] += 1

    def nacked(self, kind: str) -> None:
        self.events["nack:" + kind] += 1


def clusters(*names: str) -> Any:
    return pack(CLUSTER, {n: cluster_pb2.Cluster(name=n) for n in names})


def endpoints(*names: str) -> Any:
    return pack(ENDPOINTS, {n: endpoint_pb2.ClusterLoadAssignment(cluster_name=n) for n in names})


async def nothing_sent(ctx: FakeContext) -> bool:
    await asyncio.sleep(0.05)
    return ctx.outbox.empty()


async def test_ack_nack_stale_and_updates() -> None:
    cache, rec = ResourceCache(), Recorder()
    cache.set([clusters("a")])
    ctx = FakeContext()
    task = asyncio.create_task(AdsServicer(cache, observer=rec).StreamAggregatedResources(
        None, ctx  # type: ignore[arg-type]
    ))  # fmt: skip
    await ctx.inbox.put(ds.DiscoveryRequest(type_url=CLUSTER))
    first = await ctx.outbox.get()
    assert [r.type_url for r in first.resources] == [CLUSTER] * 1
    v1 = first.version_info
    # ACK: nothing more until something changes.
    await ctx.inbox.put(ds.DiscoveryRequest(type_url=CLUSTER, version_info=v1,
                                            response_nonce=first.nonce))  # fmt: skip
    assert await nothing_sent(ctx) and rec.events["ack:cds"] == 1
    cache.set([clusters("a", "b")])
    second = await ctx.outbox.get()
    assert second.version_info != v1 and len(second.resources) == 2
    # A request answering an older response is stale: ignored.
    await ctx.inbox.put(ds.DiscoveryRequest(type_url=CLUSTER, version_info=v1,
                                            response_nonce=first.nonce))  # fmt: skip
    assert await nothing_sent(ctx) and rec.events["ack:cds"] == 1
    # NACK: counted, not resent; the next version goes out.
    await ctx.inbox.put(ds.DiscoveryRequest(
        type_url=CLUSTER, version_info=v1, response_nonce=second.nonce,
        error_detail=status_pb2.Status(code=13, message="bad cluster"),
    ))  # fmt: skip
    assert await nothing_sent(ctx) and rec.events["nack:cds"] == 1
    cache.set([clusters("a", "c")])
    third = await ctx.outbox.get()
    assert third.version_info not in (v1, second.version_info)
    await ctx.inbox.put(grpc.aio.EOF)
    await task
    assert rec.events["streams"] == 0


async def test_endpoints_are_resent_when_envoy_rebuilds_a_changed_cluster() -> None:
    cache = ResourceCache()
    cache.set([clusters("a"), endpoints("a")])
    ctx = FakeContext()
    task = asyncio.create_task(AdsServicer(cache).StreamAggregatedResources(
        None, ctx  # type: ignore[arg-type]
    ))  # fmt: skip
    await ctx.inbox.put(ds.DiscoveryRequest(type_url=CLUSTER))
    cds = await ctx.outbox.get()
    await ctx.inbox.put(ds.DiscoveryRequest(type_url=ENDPOINTS, resource_names=["a"]))
    eds = await ctx.outbox.get()
    await ctx.inbox.put(ds.DiscoveryRequest(type_url=ENDPOINTS, resource_names=["a"],
                                            version_info=eds.version_info,
                                            response_nonce=eds.nonce))  # fmt: skip
    await ctx.inbox.put(ds.DiscoveryRequest(type_url=CLUSTER, version_info=cds.version_info,
                                            response_nonce=cds.nonce))  # fmt: skip
    assert await nothing_sent(ctx)
    # The cluster changes (not its endpoints): Envoy rebuilds it and asks for its
    # endpoints again with the same nonce and names, which looks like an ACK.
    changed = pack(CLUSTER, {"a": cluster_pb2.Cluster(name="a", connect_timeout={"seconds": 3})})
    cache.set([changed, endpoints("a")])
    assert (await ctx.outbox.get()).type_url == CLUSTER
    await ctx.inbox.put(ds.DiscoveryRequest(type_url=ENDPOINTS, resource_names=["a"],
                                            version_info=eds.version_info,
                                            response_nonce=eds.nonce))  # fmt: skip
    again = await ctx.outbox.get()
    assert again.type_url == ENDPOINTS and again.version_info == eds.version_info
    await ctx.inbox.put(grpc.aio.EOF)
    await task


async def test_settled_waits_for_every_stream() -> None:
    cache = ResourceCache()
    cache.set([clusters("a")])
    cache.stream_opened(1)
    cache.stream_opened(2)
    snap = cache.get(CLUSTER)
    assert snap is not None
    waiter = asyncio.create_task(cache.settled([CLUSTER], cache.generation, 5))
    cache.settle(1, CLUSTER, snap.version)
    await asyncio.sleep(0)
    assert not waiter.done()
    cache.stream_closed(2)  # a stream that goes away no longer holds anyone up
    assert await waiter
    assert not await cache.settled([CLUSTER], cache.generation + 1, 0.01)


async def test_a_version_published_again_settles_at_its_new_generation() -> None:
    """An endpoint added, removed, added again: the third push has the first one's
    version (the content is the same). Envoy's ACK of it settles the new generation at
    once; it used to count for the generation that first published the version, so every
    flip back waited out the whole ACK timeout (1 s, measured by loadtest.xds_propagation)."""
    cache = ResourceCache()
    cache.stream_opened(1)
    for names in (("a",), ("a", "b"), ("a",)):
        cache.set([clusters(*names)])
        snap = cache.get(CLUSTER)
        assert snap is not None
        cache.settle(1, CLUSTER, snap.version)
        assert await cache.settled([CLUSTER], cache.generation, 0.01), names


def test_versions_are_a_hash_of_the_content() -> None:
    assert clusters("a", "b").version == clusters("b", "a").version
    assert clusters("a").version != clusters("a", "b").version
