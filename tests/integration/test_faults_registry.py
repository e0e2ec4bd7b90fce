"""Fault suite, the registry and the backends: Consul stopped and restarted (with its raft
index starting over), and a model server killed under load, with the routing file and
with Consul as the registry. Real Consul, real Envoy, bounded load."""

from __future__ import annotations

import asyncio
import shutil
import time

import httpx
import pytest

from extproc.dev.consul_agent import ConsulAgent
from extproc.dev.model_servers import ModelServer
from tests.integration.conftest import StackFactory, routes_for
from tests.integration.load import Call, Load
from tests.integration.test_consul_registry import (  # noqa: F401 (fixtures)
    CHAT,
    consul,
    register_all,
    routes,
    servers,
)
from tests.support import eventually

pytestmark = pytest.mark.integration

CHAT_CALLS = [
    Call("chat-small", "/v1/chat/completions", CHAT),
    Call("chat-small", "/v1/chat/completions", CHAT, {"x-model-version": "1"}),
]


def _gauge(text: str, name: str) -> float:
    return float(next(ln for ln in text.splitlines() if ln.startswith(name)).split()[-1])


async def test_consul_restarted_with_a_new_index_recovers_without_waiting_out_the_query(
    consul: ConsulAgent,  # noqa: F811
    servers: dict[str, ModelServer],  # noqa: F811
    make_stack: StackFactory,
    client: httpx.AsyncClient,
) -> None:
    """Consul goes away and comes back empty (new data dir: its index starts low, as after
    losing its state). Blocking queries wait up to 300 s here; carrying the old index
    would park the watch that long. Requests keep routing on the last snapshot meanwhile
    (0 errors); the staleness gauge is never more than the outage's real age; a service
    registered after the restart is routed to long before 300 s."""
    await register_all(consul, servers)
    stack = await make_stack(routes(consul).replace("wait_s: 5", "wait_s: 300"))
    metrics = f"http://127.0.0.1:{stack.config.listener.metrics_port}/metrics"

    async def stale() -> float:
        return _gauge((await client.get(metrics)).text, "model_router_registry_staleness")

    load = Load(stack.url, CHAT_CALLS, concurrency=4).start()
    try:
        await eventually(lambda: load.ok() >= 20, what="load flowing")
        await asyncio.sleep(3.0)  # the watches park their blocking queries
        down = time.monotonic()  # before: the watches fail as Consul leaves
        await consul.stop()

        async def stale_but_not_older_than_the_outage() -> bool:
            value = await stale()
            age = time.monotonic() - down
            assert value <= age, (value, age)  # not the time since the query was sent
            return value >= 1.0

        await eventually(stale_but_not_older_than_the_outage)
        shutil.rmtree(consul.workdir / "data")
        await consul.start()
        await register_all(consul, servers)
        await consul.register(
            "cs-v2-late", "chat-small", servers["cs-v2"].port,
            {"model": "chat-small", "version": "2", "deployment": "chat-small-v2-late"},
            health_url=f"{servers['cs-v2'].url}/health",
        )  # fmt: skip

        async def late_instance_serves() -> bool:
            r = await client.post(
                stack.url + "/v1/chat/completions", json=CHAT, headers={"x-model-version": "2"}
            )
            return r.headers.get("x-model-router-deployment") == "chat-small-v2-late"

        # Ceiling against hangs, far below the 300 s a parked query would wait.
        await eventually(late_instance_serves, timeout=60)

        async def in_sync() -> bool:
            return await stale() == 0.0

        await eventually(in_sync, timeout=60)
    finally:
        counts = await load.stop()
    assert not load.errors(), counts


async def _kill_one_replica(stack_url: str, victim: ModelServer, model: str) -> Load:
    load = Load(stack_url, [Call(model, "/v1/chat/completions", CHAT)], concurrency=6).start()
    try:
        await eventually(lambda: load.ok() >= 50, what="load flowing")
        await victim.stop()
        gone = time.monotonic()
        await eventually(lambda: load.ok_since(gone) >= 200, what="load after the kill")
    finally:
        await load.stop()
    return load


async def test_backend_killed_static_registry_no_client_error(
    model_servers: dict[str, ModelServer], make_stack: StackFactory
) -> None:
    """One of chat-small v1's two replicas dies under load: Envoy retries the refused
    connection on the router's fallback, then health checks and outlier detection take
    it out: no client sees an error."""
    from tests.integration.conftest import SERVER_SPECS, running

    spec = next(s for s in SERVER_SPECS if s.name == "chat-small-v1-b")
    async with running([spec]) as own:  # a replica of our own to kill
        victim = own["chat-small-v1-b"]
        others = {k: v for k, v in model_servers.items() if k != "chat-small-v1-b"}
        stack = await make_stack(routes_for({**others, "chat-small-v1-b": victim}))
        load = await _kill_one_replica(stack.url, victim, "chat-small")
    assert not load.errors(), load.counts


async def test_backend_killed_consul_registry_no_client_error(
    consul: ConsulAgent,  # noqa: F811
    servers: dict[str, ModelServer],  # noqa: F811
    make_stack: StackFactory,
) -> None:
    await register_all(consul, servers)
    stack = await make_stack(routes(consul))
    load = await _kill_one_replica(stack.url, servers["cs-v1-b"], "chat-small")
    assert not load.errors(), load.counts
