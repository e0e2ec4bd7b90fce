"""Live signals through real Envoy: in-flight picks released by Envoy's access log,
latency averages, passive ejection."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
import yaml

from extproc.dev.model_servers import ModelServer, ModelServerSpec
from extproc.ops.stack import Stack
from tests.integration.conftest import StackFactory, running
from tests.support import eventually

pytestmark = pytest.mark.integration

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, ModelServer]]:
    specs = [
        ModelServerSpec("c-a", "openai", "chat", "1"),
        ModelServerSpec("c-b", "openai", "chat", "1"),
    ]
    async with running(specs) as started:
        yield started


def routes(s: dict[str, ModelServer], profile: str = "least-inflight") -> str:
    return f"""
scheduling: {{profile: {profile}}}
models:
  chat: {{protocol: openai, versions: ["1"]}}
deployments:
  - {{name: c1, model: chat, version: "1",
     endpoints: ["{s["c-a"].address}", "{s["c-b"].address}"]}}
"""


async def metric_values(client: httpx.AsyncClient, stack: Stack, name: str) -> list[float]:
    """The values of ``name`` across every worker's /metrics."""
    cfg = stack.config.listener
    out = []
    for i in range(cfg.workers):
        text = (await client.get(f"http://{cfg.host}:{cfg.metrics_port + i}/metrics")).text
        out += [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")
        ]
    return out


async def load(client: httpx.AsyncClient, stack: Stack, n: int, out: Counter[str]) -> None:
    async def one() -> None:
        r = await client.post(stack.url + "/v1/chat/completions", json=CHAT)
        out[str(r.status_code)] += 1

    deadline = time.monotonic() + 30
    while sum(out.values()) < n and time.monotonic() < deadline:
        await asyncio.gather(*(one() for _ in range(8)))


@pytest.mark.parametrize("workers", [1, 2])
async def test_inflight_counts_return_to_zero_after_load(
    servers: dict[str, ModelServer],
    make_stack: StackFactory,
    client: httpx.AsyncClient,
    workers: int,
) -> None:
    stack = await make_stack(routes(servers), workers=workers)
    outcomes: Counter[str] = Counter()
    await load(client, stack, 400, outcomes)
    assert set(outcomes) == {"200"}, outcomes
    # Every pick was released by its access-log entry (none by timeout), on every worker.
    await eventually(
        lambda: _all_zero(client, stack), timeout=10, what="in-flight back to 0 everywhere"
    )
    released = sum(await metric_values(client, stack, "model_router_inflight_released_total"))
    assert released == sum(outcomes.values())
    assert sum(await metric_values(client, stack, "model_router_inflight_expired_total")) == 0
    ttfb = await metric_values(client, stack, "model_router_endpoint_ttfb_seconds")
    assert ttfb and all(v > 0 for v in ttfb)


async def _all_zero(client: httpx.AsyncClient, stack: Stack) -> bool:
    return sum(await metric_values(client, stack, "model_router_inflight_open")) == 0


async def test_least_inflight_avoids_an_endpoint_holding_open_streams(
    make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    """One long stream open on each endpoint, then one closed: new requests go to the
    endpoint that is free (the router counts its own picks, no scrape involved)."""
    specs = [
        ModelServerSpec("c-a", "openai", "chat", "1", stream_delay_s=0.2, stream_chunks=150),
        ModelServerSpec("c-b", "openai", "chat", "1", stream_delay_s=0.2, stream_chunks=150),
    ]
    async with running(specs) as servers:
        stack = await make_stack(routes(servers))
        body = {**CHAT, "stream": True}
        held: dict[str, httpx.Response] = {}
        try:
            for _ in range(2):  # least in-flight: the second goes to the other endpoint
                req = client.build_request("POST", stack.url + "/v1/chat/completions", json=body)
                resp = await client.send(req, stream=True)
                held[resp.headers["x-served-by"]] = resp
            assert set(held) == {"c-a", "c-b"}
            await held.pop("c-a").aclose()  # Envoy logs it ended: c-a's count drops to 0
            await eventually(
                lambda: _inflight(client, stack, servers["c-a"].address, 0.0),
                timeout=10, what="c-a free",
            )  # fmt: skip
            seen = Counter()
            for _ in range(6):  # each after the last one's access-log entry came back
                r = await client.post(stack.url + "/v1/chat/completions", json=CHAT)
                seen[r.headers["x-served-by"]] += 1
                await eventually(
                    lambda: _inflight(client, stack, servers["c-a"].address, 0.0),
                    timeout=10, what="c-a released",
                )  # fmt: skip
            assert seen == {"c-a": 6}, seen
        finally:
            for resp in held.values():
                await resp.aclose()


async def _inflight(client: httpx.AsyncClient, stack: Stack, address: str, want: float) -> bool:
    cfg = stack.config.listener
    text = (await client.get(f"http://{cfg.host}:{cfg.metrics_port}/metrics")).text
    for line in text.splitlines():
        if line.startswith("model_router_endpoint_inflight{") and f'endpoint="{address}"' in line:
            return float(line.rsplit(" ", 1)[1]) == want
    return False


async def test_an_access_log_outage_does_not_wedge_routing(
    servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    """Envoy sends no access-log entries (its gRPC logger is gone): routing goes on,
    and the router releases its picks by timeout, counted as expired."""
    # 5 s: the picks must still be open when the metrics are read after the load.
    stack = await make_stack(routes(servers) + "signals: {inflight_timeout_s: 5}\n")
    assert stack.envoy is not None
    await stack.envoy.stop(5)
    doc = yaml.safe_load(stack.bootstrap.read_text())
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    logs = hcm["typed_config"]["access_log"]
    hcm["typed_config"]["access_log"] = [a for a in logs if not a["name"].endswith("http_grpc")]
    stack.bootstrap.write_text(yaml.safe_dump(doc))
    await stack.start_envoy(render=False)
    outcomes: Counter[str] = Counter()
    await load(client, stack, 40, outcomes)
    assert set(outcomes) == {"200"}, outcomes
    assert sum(await metric_values(client, stack, "model_router_inflight_open")) > 0
    await eventually(lambda: _all_zero(client, stack), timeout=30, what="released by timeout")
    expired = sum(await metric_values(client, stack, "model_router_inflight_expired_total"))
    assert expired == 40
