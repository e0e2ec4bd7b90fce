"""The router as Envoy's xDS control plane, against real Envoy: initial config, updates,
endpoint fallbacks walked on retry, health checks and outlier detection."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from extproc.dev.model_servers import ModelServer, ModelServerSpec
from extproc.ops.procs import PORTS
from extproc.ops.stack import Stack
from tests.integration.conftest import StackFactory, running
from tests.support import eventually

pytestmark = pytest.mark.integration

TENSOR = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 0.5]}]}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, ModelServer]]:
    specs = [
        ModelServerSpec("k-a", "kserve_v2", "kmodel", "1"),
        ModelServerSpec("k-b", "kserve_v2", "kmodel", "1"),
        ModelServerSpec("k-c", "kserve_v2", "kmodel", "1"),
        ModelServerSpec("c-a", "openai", "chat", "1"),
        ModelServerSpec("c-b", "openai", "chat", "1"),
    ]
    async with running(specs) as started:
        yield started


def routes(s: dict[str, ModelServer], kmodel: list[str], chat: list[str]) -> str:
    k = ", ".join(f'"{a}"' for a in kmodel)
    c = ", ".join(f'"{a}"' for a in chat)
    return f"""
models:
  kmodel: {{protocol: kserve_v2, versions: ["1"]}}
  chat: {{protocol: openai, versions: ["1"]}}
deployments:
  - {{name: k1, model: kmodel, version: "1", endpoints: [{k}]}}
  - {{name: c1, model: chat, version: "1", endpoints: [{c}]}}
"""


async def clusters(client: httpx.AsyncClient, stack: Stack) -> dict[str, set[str]]:
    """Envoy's view: deployment cluster -> its endpoint addresses (from /clusters)."""
    text = (await client.get(stack.admin_url + "/clusters")).text
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) >= 4 and parts[0].startswith("deployment.") and parts[2] == "cx_total":
            out.setdefault(parts[0], set()).add(parts[1])
    return out


async def health_flags(client: httpx.AsyncClient, stack: Stack, cluster: str) -> dict[str, str]:
    text = (await client.get(stack.admin_url + "/clusters")).text
    return {
        p[1]: p[3]
        for line in text.splitlines()
        if (p := line.split("::"))[0] == cluster and len(p) >= 4 and p[2] == "health_flags"
    }


async def test_envoy_gets_clusters_endpoints_and_routes_from_the_router(
    servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    a, b = servers["k-a"].address, servers["c-a"].address
    stack = await make_stack(routes(servers, [a], [b]))
    seen = await clusters(client, stack)
    assert seen == {"deployment.k1": {a}, "deployment.c1": {b}}
    dump = await client.get(stack.admin_url + "/config_dump?resource=dynamic_route_configs")
    assert '"name": "model_router"' in dump.text
    r = await client.post(stack.url + "/v2/models/kmodel/infer", json=TENSOR)
    assert r.status_code == 200 and r.headers["x-served-by"] == "k-a"
    cfg = stack.config.listener
    metrics = (await client.get(f"http://{cfg.host}:{cfg.metrics_port}/metrics")).text
    assert "model_router_xds_streams 1.0" in metrics
    assert 'model_router_xds_acks_total{type="cds"}' in metrics


async def test_a_reload_reaches_envoy(
    servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    a, b, c = (servers[n].address for n in ("k-a", "k-b", "c-a"))
    stack = await make_stack(routes(servers, [a], [c]))
    stack.config_path.write_text(stack.config_path.read_text().replace(f'"{a}"', f'"{a}", "{b}"'))
    assert stack.router is not None
    stack.router.signal(signal.SIGHUP)
    started = time.monotonic()
    await eventually(
        lambda: _has(client, stack, "deployment.k1", {a, b}), timeout=10, what="new endpoint"
    )
    print(f"\nreload -> Envoy /clusters: {time.monotonic() - started:.3f}s")
    # A new endpoint takes traffic once its first active health check passed.
    served: set[str] = set()

    async def both_serve() -> bool:
        r = await client.post(stack.url + "/v2/models/kmodel/infer", json=TENSOR)
        assert r.status_code == 200
        served.add(r.headers["x-served-by"])
        return served == {"k-a", "k-b"}

    await eventually(both_serve, timeout=10, what="traffic on both endpoints")


async def _has(client: httpx.AsyncClient, stack: Stack, cluster: str, eps: set[str]) -> bool:
    return (await clusters(client, stack)).get(cluster) == eps


async def test_the_router_list_is_walked_past_a_dead_primary(
    servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    """override_host: a refused connection to the router's primary retries the next
    endpoint of its list (health checks off here, so only the retry can save it)."""
    dead = f"127.0.0.1:{PORTS.take(1)[0]}"  # reserved, nothing listens
    a, b = servers["c-a"].address, servers["c-b"].address
    text = routes(servers, [servers["k-a"].address], [dead, a, b]).replace(
        'endpoints: ["' + dead, 'health_check: {enabled: false}, endpoints: ["' + dead
    )
    stack = await make_stack(text)
    picked_dead = 0
    for _ in range(9):
        r = await client.post(stack.url + "/v1/chat/completions", json=CHAT)
        assert r.status_code == 200, r.text
        assert r.headers["x-served-by"] in ("c-a", "c-b")
        upstream = servers[r.headers["x-served-by"]].received[-1].headers
        picked_dead += upstream["x-gateway-destination-endpoint"].startswith(dead)
    assert picked_dead >= 2  # round robin put the dead endpoint first several times
    stats = await client.get(stack.admin_url + "/stats?filter=deployment_c1.upstream_rq_retry$")
    assert int(stats.text.split(":")[1]) >= 1, stats.text


async def test_a_killed_backend_is_ejected_and_retries_hide_it(
    servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    """Two healthy endpoints, load on both the native and the router path, one killed:
    0 client errors, and Envoy marks it unhealthy."""
    k = [servers["k-a"].address, servers["k-b"].address]
    c = [servers["c-a"].address, servers["c-b"].address]
    stack = await make_stack(routes(servers, k, c))
    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()

    async def load(path: str, body: dict[str, object]) -> None:
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            r = await client.post(stack.url + path, json=body)
            outcomes[str(r.status_code)] += 1

    loops = [
        asyncio.create_task(load("/v2/models/kmodel/infer", TENSOR)),  # native
        asyncio.create_task(load("/v2/models/kmodel/infer", TENSOR)),
        asyncio.create_task(load("/v1/chat/completions", CHAT)),  # through the router
        asyncio.create_task(load("/v1/chat/completions", CHAT)),
    ]
    await eventually(lambda: outcomes["200"] >= 100, timeout=20, what="load before the kill")
    killed_at = time.monotonic()
    await servers["k-b"].stop()
    await servers["c-b"].stop()
    await eventually(
        lambda: _unhealthy(client, stack, "deployment.k1", k[1]), timeout=10, what="k-b out"
    )
    print(f"\nkilled backend marked unhealthy after {time.monotonic() - killed_at:.3f}s")
    count = servers["k-a"].count
    await eventually(lambda: servers["k-a"].count >= count + 50, timeout=20, what="more load")
    stop.set()
    await asyncio.gather(*loops)
    assert set(outcomes) == {"200"}, outcomes


async def _unhealthy(client: httpx.AsyncClient, stack: Stack, cluster: str, ep: str) -> bool:
    flags = (await health_flags(client, stack, cluster)).get(ep, "healthy")
    return flags != "healthy"
