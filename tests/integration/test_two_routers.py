"""Two Envoys fed by two router replicas: one router killed under load."""

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
from tests.integration.test_xds import CHAT, TENSOR, clusters
from tests.support import eventually, http_error

pytestmark = pytest.mark.integration


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, ModelServer]]:
    specs = [
        ModelServerSpec("k-a", "kserve_v2", "kmodel", "1"),
        ModelServerSpec("k-b", "kserve_v2", "kmodel", "1"),
        ModelServerSpec("c-a", "openai", "chat", "1"),
    ]
    async with running(specs) as started:
        yield started


def routes(kmodel: list[str], chat: str) -> str:
    k = ", ".join(f'"{a}"' for a in kmodel)
    return f"""
models:
  kmodel: {{protocol: kserve_v2, versions: ["1"]}}
  chat: {{protocol: openai, versions: ["1"]}}
deployments:
  - {{name: k1, model: kmodel, version: "1", endpoints: [{k}]}}
  - {{name: c1, model: chat, version: "1", endpoints: ["{chat}"]}}
"""


async def test_one_router_killed_under_load(
    servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    """Native path: 0 errors. ext_proc path (fail-closed): only the documented JSON 503
    while Envoy moves to the other router, then 200s. The survivor keeps both Envoys up
    to date."""
    ka, kb, ca = (servers[n].address for n in ("k-a", "k-b", "c-a"))
    text = routes([ka], ca)
    port_a, port_b = PORTS.take(2)
    stack_a = await make_stack(text, grpc_port=port_a, peers=[f"127.0.0.1:{port_b}"])
    stack_b = await make_stack(text, grpc_port=port_b, peers=[f"127.0.0.1:{port_a}"])
    native: Counter[str] = Counter()
    routed: Counter[str] = Counter()
    stop = asyncio.Event()

    async def load(stack: Stack, path: str, body: dict[str, object], out: Counter[str]) -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            r = await client.post(stack.url + path, json=body)
            if r.status_code == 200:
                out["200"] += 1
            else:
                out[f"{r.status_code}:{http_error(r)['type']}"] += 1

    loops = [
        asyncio.create_task(load(s, "/v2/models/kmodel/infer", TENSOR, native))
        for s in (stack_a, stack_b)
    ] + [
        asyncio.create_task(load(s, "/v1/chat/completions", CHAT, routed))
        for s in (stack_a, stack_b)
    ]
    await eventually(lambda: routed["200"] >= 100, timeout=20, what="load before the kill")
    assert stack_a.router is not None and stack_a.router.proc is not None
    stack_a.router.signal(signal.SIGKILL)
    await stack_a.router.proc.wait()
    ok_at_kill = routed["200"]
    await eventually(lambda: routed["200"] >= ok_at_kill + 200, timeout=20, what="recovery")
    # The survivor pushes a change to both Envoys (one had its ADS stream on the dead one).
    assert stack_b.router is not None
    stack_b.config_path.write_text(
        stack_b.config_path.read_text().replace(f'"{ka}"]', f'"{ka}", "{kb}"]')
    )
    stack_b.router.signal(signal.SIGHUP)
    for stack in (stack_a, stack_b):
        await eventually(
            lambda s=stack: _k1(client, s, {ka, kb}), timeout=10, what="update via survivor"
        )
    stop.set()
    await asyncio.gather(*loops)
    print(f"\nnative: {dict(native)}; through a router: {dict(routed)}")
    assert set(native) == {"200"}, native
    assert set(routed) <= {"200", "503:router_unavailable"}, routed


async def _k1(client: httpx.AsyncClient, stack: Stack, eps: set[str]) -> bool:
    return (await clusters(client, stack)).get("deployment.k1") == eps
