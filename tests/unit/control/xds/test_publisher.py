"""The publisher: make before break, bounded by ``envoy.xds_ack_timeout_s``."""

from __future__ import annotations

import asyncio

from extproc.control.compile import CompiledRouting, compile_routing
from extproc.control.loading import parse_config
from extproc.control.registry import RegistryInputs, StaticRegistry
from extproc.control.xds.cache import CLUSTER, ENDPOINTS, ResourceCache
from extproc.control.xds.publisher import XdsPublisher
from extproc.core.snapshot import Snapshot

ROUTES = """
envoy: {xds_ack_timeout_s: 0.05}
models: {m: {protocol: openai, versions: ['1']}}
deployments: [{name: d, model: m, version: '1', endpoints: ['127.0.0.1:9']}]
"""


async def _snapshot(text: str = ROUTES) -> tuple[CompiledRouting, Snapshot]:
    compiled = compile_routing(parse_config(text))
    registry = StaticRegistry(RegistryInputs.of(compiled))
    await registry.start()
    assert registry.snapshot is not None
    return compiled, registry.snapshot


async def test_an_envoy_that_never_acks_holds_a_publish_only_for_the_bound() -> None:
    compiled, snapshot = await _snapshot()
    cache = ResourceCache()
    cache.stream_opened(1)  # connected, and silent
    told: list[None] = []
    publisher = XdsPublisher(
        cache,
        ack_timeout_s=compiled.config.envoy.xds_ack_timeout_s,
        on_unacked=lambda: told.append(None),
    )
    await publisher.publish(compiled, snapshot)
    assert publisher.unacked == 1 and "unacked=1" in repr(publisher) and len(told) == 1


async def test_a_publish_returns_once_every_envoy_acked_clusters_and_endpoints() -> None:
    compiled, snapshot = await _snapshot()
    cache = ResourceCache()
    cache.stream_opened(1)
    cache.stream_opened(2)
    publisher = XdsPublisher(cache, ack_timeout_s=30)
    publishing = asyncio.create_task(publisher.publish(compiled, snapshot))
    await asyncio.sleep(0)
    for stream in (1, 2):
        for kind in (CLUSTER, ENDPOINTS):
            assert not publishing.done()
            current = cache.get(kind)
            assert current is not None
            cache.settle(stream, kind, current.version)
            await asyncio.sleep(0)
    await asyncio.wait_for(publishing, 5)
    assert publisher.unacked == 0
    # The same resources again: nothing new for Envoy, nothing to wait for (the bound is
    # 30 s: a wait would be cut off by this ceiling).
    await asyncio.wait_for(publisher.publish(compiled, snapshot), 5)
    assert publisher.unacked == 0
    await publisher.stop()


def test_the_bound_defaults_to_five_seconds() -> None:
    assert (
        parse_config(ROUTES.replace("{xds_ack_timeout_s: 0.05}", "{}")).envoy.xds_ack_timeout_s == 5
    )
