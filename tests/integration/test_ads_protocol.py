"""The ADS server against a real Envoy, driven directly: a rejected (NACKed) update is
logged and counted, Envoy keeps its previous config, and the next good one applies."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc

from extproc.control.loading import parse_config
from extproc.control.registry import RegistryInputs, StaticRegistry
from extproc.control.reload import load_routing
from extproc.control.xds.ads import AdsServicer
from extproc.control.xds.cache import ROUTES, ResourceCache, pack
from extproc.control.xds.publisher import XdsPublisher
from extproc.control.xds.routes import ROUTE_CONFIG_NAME
from extproc.dev.model_servers import ModelServer, ModelServerSpec
from extproc.ops.envoy_config import EnvoyPorts, render_bootstrap
from extproc.ops.procs import PORTS, ManagedProcess, envoy_argv, wait_http_ok
from tests.integration.conftest import running
from tests.support import eventually

pytestmark = pytest.mark.integration

TENSOR = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 0.5]}]}


class Recorder:
    def __init__(self) -> None:
        self.events: Counter[str] = Counter()

    def streams(self, delta: int) -> None:
        self.events["streams"] += delta

    def sent(self, kind: str) -> None:
        self.events[f"sent:{kind}"] += 1

    def acked(self, kind: str) -> None:
        self.events[f"ack:{kind}"] += 1

    def nacked(self, kind: str) -> None:
        self.events[f"nack:{kind}"] += 1


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    async with running([ModelServerSpec("k", "kserve_v2", "kmodel", "1")]) as started:
        yield started["k"]


async def test_a_nacked_update_keeps_the_previous_config(
    server: ModelServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ads_port, listen, admin = PORTS.take(3)
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "models: {kmodel: {protocol: kserve_v2, versions: ['1']}}\n"
        f"deployments: [{{name: k1, model: kmodel, version: '1', endpoints: ['{server.address}']}}]\n"
    )
    compiled = load_routing(routes)
    registry = StaticRegistry(RegistryInputs.of(compiled))
    await registry.start()
    assert registry.snapshot is not None
    cache, recorder = ResourceCache(), Recorder()
    await XdsPublisher(cache).publish(compiled, registry.snapshot)
    grpc_server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(
        AdsServicer(cache, observer=recorder), grpc_server
    )
    grpc_server.add_insecure_port(f"127.0.0.1:{ads_port}")
    await grpc_server.start()
    bootstrap = tmp_path / "envoy.yaml"
    bootstrap.write_text(
        render_bootstrap(  # this test's ADS server listens on TCP only
            parse_config(routes.read_text()),
            EnvoyPorts(listen, admin, (ads_port,), unix_sockets=False),
        )
    )
    envoy = ManagedProcess("envoy", envoy_argv(bootstrap), log=tmp_path / "envoy.log")
    await envoy.start()
    try:
        await wait_http_ok(f"http://127.0.0.1:{admin}/ready", proc=envoy)
        url = f"http://127.0.0.1:{listen}/v2/models/kmodel/infer"
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            r = await client.post(url, json=TENSOR)
            assert r.status_code == 200 and r.headers["x-served-by"] == "k"
            good = cache.get(ROUTES)
            assert good is not None
            # A route table Envoy must refuse: an invalid regex.
            bad = route_pb2.RouteConfiguration()
            bad.CopyFrom(_unpack(good.resources[ROUTE_CONFIG_NAME]))
            bad.virtual_hosts[0].routes.add().match.safe_regex.regex = "(unclosed"
            cache.set([pack(ROUTES, {ROUTE_CONFIG_NAME: bad})])
            await eventually(lambda: recorder.events["nack:rds"] >= 1, timeout=10, what="NACK")
            assert "Envoy rejected rds" in caplog.text
            dump = await client.get(
                f"http://127.0.0.1:{admin}/config_dump?resource=dynamic_route_configs"
            )
            assert good.version in dump.text  # the previous version is still in force
            r = await client.post(url, json=TENSOR)
            assert r.status_code == 200 and r.headers["x-served-by"] == "k"
            # The rejected version is never resent; the next good one applies.
            await asyncio.sleep(0)
            assert recorder.events["sent:rds"] == 2
            acks = recorder.events["ack:rds"]
            cache.set([good])
            await eventually(lambda: recorder.events["ack:rds"] > acks, timeout=10, what="ACK")
    finally:
        await envoy.stop(5)
        await grpc_server.stop(0)
        await registry.stop()


def _unpack(packed: object) -> route_pb2.RouteConfiguration:
    out = route_pb2.RouteConfiguration()
    packed.Unpack(out)  # type: ignore[attr-defined]
    return out
