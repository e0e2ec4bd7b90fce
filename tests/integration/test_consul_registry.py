"""Consul as the registry: a real Consul agent, real health checks, real Envoy + router."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from extproc.dev.consul_agent import ConsulAgent, consul_binary
from extproc.dev.model_servers import ModelServer, ModelServerSpec
from extproc.ops.stack import Stack
from tests.integration.conftest import StackFactory, running

pytestmark = pytest.mark.integration

CHAT = {"model": "chat-small", "messages": [{"role": "user", "content": "hello"}]}
REPORT = Path(os.environ.get("MODEL_ROUTER_REPORT_DIR", "/tmp")) / "consul-measurements.txt"


@pytest.fixture
async def consul(tmp_path: Path) -> AsyncIterator[ConsulAgent]:
    binary = consul_binary()
    if binary is None:
        pytest.skip(
            "no Consul binary: run scripts/install-consul (builds it with Go), "
            "or set CONSUL_BIN / put consul on PATH"
        )
    agent = ConsulAgent(binary, tmp_path / "consul")
    try:
        await agent.start()
        yield agent
    finally:
        await agent.stop()


SPECS = [
    ModelServerSpec("cs-v1-a", "openai", "chat-small", "1"),
    ModelServerSpec("cs-v1-b", "openai", "chat-small", "1"),
    ModelServerSpec("cs-v2", "openai", "chat-small", "2"),
    ModelServerSpec("cl-med", "openai", "chat-large", "1"),
    ModelServerSpec("cl-gen", "openai", "chat-large", "1"),
]


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, ModelServer]]:
    async with running(SPECS) as started:
        yield started


async def register_all(consul: ConsulAgent, servers: dict[str, ModelServer]) -> None:
    meta = {
        "cs-v1-a": {"version": "1", "deployment": "chat-small-v1"},
        "cs-v1-b": {"version": "1", "deployment": "chat-small-v1"},
        "cs-v2": {"version": "2", "deployment": "chat-small-v2"},
        "cl-med": {"version": "1", "deployment": "chat-large-med", "domain": "medical",
                   "max_context": "32768", "accelerator": "a100"},
        "cl-gen": {"version": "1", "deployment": "chat-large-gen", "domain": "general",
                   "max_context": "8192", "accelerator": "l4"},
    }  # fmt: skip
    for name, s in servers.items():
        await consul.register(
            name,
            s.spec.model,
            s.port,
            {"model": s.spec.model, "protocol": "openai", **meta[name]},
            health_url=f"{s.url}/health",
        )


def routes(consul: ConsulAgent, extra: str = "") -> str:
    return (
        "registry:\n"
        "  type: consul\n"
        f"  consul: {{address: '{consul.address}', wait_s: 5, startup_timeout_s: 5{extra}}}\n"
        "models:\n"
        "  chat-small: {protocol: openai, versions: ['1', '2']}\n"
        "  chat-large: {protocol: openai, versions: ['1']}\n"
    )


@pytest.fixture
async def consul_stack(
    consul: ConsulAgent, servers: dict[str, ModelServer], make_stack: StackFactory
) -> Stack:
    await register_all(consul, servers)
    return await make_stack(routes(consul))


async def chat(client: httpx.AsyncClient, stack: Stack, **headers: str) -> httpx.Response:
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    return await client.post(stack.url + "/v1/chat/completions", json=CHAT, headers=hdrs)


async def spread(client: httpx.AsyncClient, stack: Stack, n: int, **headers: str) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        r = await chat(client, stack, **headers)
        seen[r.headers.get("x-served-by", str(r.status_code))] += 1
    return seen


async def test_routes_to_healthy_consul_instances(
    consul_stack: Stack, client: httpx.AsyncClient
) -> None:
    seen = await spread(client, consul_stack, 8, x_model_version="1")
    assert seen == {"cs-v1-a": 4, "cs-v1-b": 4}
    seen = await spread(client, consul_stack, 3, x_model_version="2")
    assert seen == {"cs-v2": 3}
    r = await chat(client, consul_stack, x_model_version="1")
    assert r.headers["x-model-router-deployment"] == "chat-small-v1"


async def test_health_changes_propagate(
    consul_stack: Stack, client: httpx.AsyncClient, servers: dict[str, ModelServer]
) -> None:
    a = servers["cs-v1-a"]
    a.set_healthy(False)
    failed_at = time.monotonic()
    last_hit = failed_at
    deadline = failed_at + 15
    while time.monotonic() < deadline:
        r = await chat(client, consul_stack, x_model_version="1")
        assert r.status_code == 200
        if r.headers["x-served-by"] == "cs-v1-a":
            last_hit = time.monotonic()
        elif time.monotonic() - last_hit > 2.0:
            break
        await asyncio.sleep(0.02)
    out_after = last_hit - failed_at
    assert out_after < 5.0, f"unhealthy instance still got traffic {out_after:.2f}s later"
    assert (await spread(client, consul_stack, 20, x_model_version="1")) == {"cs-v1-b": 20}
    a.set_healthy(True)
    back_at = time.monotonic()
    while time.monotonic() - back_at < 15:
        r = await chat(client, consul_stack, x_model_version="1")
        if r.headers["x-served-by"] == "cs-v1-a":
            break
        await asyncio.sleep(0.02)
    back_after = time.monotonic() - back_at
    assert back_after < 5.0
    REPORT.write_text(
        f"health propagation (check interval 1s): out of rotation after {out_after:.2f}s, "
        f"back in rotation after {back_after:.2f}s\n"
    )
    print(REPORT.read_text())


async def test_deregister_and_maintenance_exclude_instances(
    consul: ConsulAgent, consul_stack: Stack, client: httpx.AsyncClient
) -> None:
    await consul.deregister("cs-v1-b")
    await asyncio.sleep(0.5)
    assert (await spread(client, consul_stack, 6, x_model_version="1")) == {"cs-v1-a": 6}
    await consul.maintenance("cs-v1-a", True)
    await asyncio.sleep(0.5)
    r = await chat(client, consul_stack, x_model_version="1")
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "no_healthy_deployment"
    await consul.maintenance("cs-v1-a", False)
    await asyncio.sleep(0.5)
    assert (await spread(client, consul_stack, 3, x_model_version="1")) == {"cs-v1-a": 3}


async def test_version_metadata_change_is_followed(
    consul: ConsulAgent,
    consul_stack: Stack,
    client: httpx.AsyncClient,
    servers: dict[str, ModelServer],
) -> None:
    b = servers["cs-v1-b"]
    await consul.register(
        "cs-v1-b", "chat-small", b.port,
        {"model": "chat-small", "version": "2", "deployment": "chat-small-v2"},
        health_url=f"{b.url}/health",
    )  # fmt: skip
    await asyncio.sleep(0.5)
    assert (await spread(client, consul_stack, 4, x_model_version="2")) == {
        "cs-v2": 2,
        "cs-v1-b": 2,
    }
    assert (await spread(client, consul_stack, 4, x_model_version="1")) == {"cs-v1-a": 4}


async def test_capabilities_select_deployments(
    consul_stack: Stack, client: httpx.AsyncClient
) -> None:
    body = {**CHAT, "model": "chat-large"}
    url = consul_stack.url + "/v1/chat/completions"
    for caps, want in (
        ("domain=medical", "cl-med"),
        ("max_context>=16000", "cl-med"),
        ("accelerator=l4,max_context>=8192", "cl-gen"),
    ):
        for _ in range(3):
            r = await client.post(url, json=body, headers={"x-model-capabilities": caps})
            assert r.status_code == 200 and r.headers["x-served-by"] == want, caps
    r = await client.post(url, json=body, headers={"x-model-capabilities": "domain=legal"})
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["type"] == "no_healthy_deployment" and "domain=legal" in err["message"]


async def test_consul_outage_keeps_last_snapshot_and_recovers(
    consul: ConsulAgent,
    consul_stack: Stack,
    client: httpx.AsyncClient,
    servers: dict[str, ModelServer],
) -> None:
    cfg = consul_stack.config
    metrics_url = f"http://127.0.0.1:{cfg.listener.metrics_port}/metrics"
    stop = asyncio.Event()
    results: Counter[str] = Counter()

    async def load() -> None:
        while not stop.is_set():
            r = await chat(client, consul_stack)
            results[str(r.status_code)] += 1

    def staleness(text: str) -> float:
        line = next(ln for ln in text.splitlines() if ln.startswith("model_router_registry_stale"))
        return float(line.split()[-1])

    workers = [asyncio.create_task(load()) for _ in range(4)]
    try:
        await asyncio.sleep(0.5)
        # In sync: parked blocking queries are fresh, whatever their wait.
        assert staleness((await client.get(metrics_url)).text) == 0.0
        await consul.stop()
        await asyncio.sleep(3.0)  # routing on the last snapshot
        assert staleness((await client.get(metrics_url)).text) >= 2.0
        await consul.start()  # same data dir: the catalog survives, as in production
        # A new instance registered after the restart must start receiving traffic.
        await consul.register(
            "cs-v2-late", "chat-small", servers["cs-v2"].port,
            {"model": "chat-small", "version": "2", "deployment": "chat-small-v2-late"},
            health_url=f"{servers['cs-v2'].url}/health",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        seen = False
        while time.monotonic() < deadline and not seen:
            r = await chat(client, consul_stack, x_model_version="2")
            seen = r.headers.get("x-model-router-deployment") == "chat-small-v2-late"
            await asyncio.sleep(0.1)
        assert seen, "router did not pick up registrations after Consul came back"
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert set(results) == {"200"}, results
    assert results["200"] > 50
    text = (await client.get(metrics_url)).text
    assert "model_router_registry_staleness_seconds" in text
    router_log = consul_stack.workdir / "router.log"
    deadline = time.monotonic() + 30  # every watch retries within its backoff cap (10 s)
    while time.monotonic() < deadline:  # polling a log file: no event to wait on
        if "Consul reachable again" in router_log.read_text():
            break
        await asyncio.sleep(0.2)
    log = router_log.read_text()
    assert staleness((await client.get(metrics_url)).text) == 0.0  # recovered
    outage_logs = [ln for ln in log.splitlines() if "Consul unreachable" in ln]
    assert len(outage_logs) == 1, outage_logs  # once per outage, not per retry
    assert "Consul reachable again" in log


async def test_not_serving_until_consul_answers(
    tmp_path: Path, make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    from grpc_health.v1 import health_pb2

    from extproc.ops.procs import PORTS, ManagedProcess, grpc_health, router_argv

    port, mport, dead = PORTS.take(3)
    path = tmp_path / "routes.yaml"
    base = (
        f"listener: {{port: {port}, metrics_port: {mport}, grace_period_s: 1}}\n"
        f"registry: {{type: consul, consul: {{address: '127.0.0.1:{dead}', startup_timeout_s: 1"
    )
    tail = (
        "}}\nmodels: {m: {protocol: openai, versions: ['1']}}\n"
        "deployments: [{name: d, model: m, version: '1', endpoints: ['127.0.0.1:9']}]\n"
    )
    for fallback, want in (
        ("", health_pb2.HealthCheckResponse.NOT_SERVING),
        (", fallback_to_file: true", health_pb2.HealthCheckResponse.SERVING),
    ):
        path.write_text(base + fallback + tail)
        router = ManagedProcess("router", router_argv(path), log=tmp_path / "router.log")
        await router.start()
        try:
            deadline = time.monotonic() + 15
            status = None
            while time.monotonic() < deadline:
                try:
                    if await grpc_health(f"127.0.0.1:{port}", "liveness") == 1:
                        await asyncio.sleep(1.5)  # past startup_timeout_s
                        status = await grpc_health(f"127.0.0.1:{port}", "readiness")
                        break
                except Exception:
                    await asyncio.sleep(0.1)
            assert status == want, (fallback, status)
        finally:
            await router.stop()


async def test_explain_and_metrics_show_consul_endpoints_and_state(
    consul: ConsulAgent,
    consul_stack: Stack,
    client: httpx.AsyncClient,
    servers: dict[str, ModelServer],
    tmp_path: Path,
) -> None:
    import sys

    servers["cs-v2"].set_healthy(False)
    await consul.maintenance("cs-v1-b", True)
    deadline = time.monotonic() + 10
    cfg = consul_stack.config
    metrics_url = f"http://127.0.0.1:{cfg.listener.metrics_port}/metrics"
    want = [
        'model_router_registry_endpoints{deployment="chat-small-v2",model="chat-small",'
        'state="critical",version="2"} 1.0',
        'model_router_registry_endpoints{deployment="chat-small-v1",model="chat-small",'
        'state="maintenance",version="1"} 1.0',
        'model_router_registry_endpoints{deployment="chat-small-v1",model="chat-small",'
        'state="routable",version="1"} 1.0',
    ]
    text = ""
    while time.monotonic() < deadline:
        text = (await client.get(metrics_url)).text
        if all(w in text for w in want):
            break
        await asyncio.sleep(0.2)
    assert all(w in text for w in want), [ln for ln in text.splitlines() if "endpoints{" in ln]
    body = tmp_path / "req.json"
    body.write_text(json.dumps(CHAT))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "extproc", "explain", "--config", str(consul_stack.config_path),
        "--request", str(body), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    result = json.loads(out)
    assert result["registry"]["type"] == "consul" and result["registry"]["reachable"]
    states = {
        (d["deployment"], e["address"]): e["state"]
        for d in result["deployments"]
        for e in d["endpoints"]
    }
    assert states[("chat-small-v1", servers["cs-v1-a"].address)] == "routable"
    assert states[("chat-small-v1", servers["cs-v1-b"].address)] == "maintenance"
    assert states[("chat-small-v2", servers["cs-v2"].address)] == "critical"
    assert result["decision"]["endpoint"] == servers["cs-v1-a"].address


async def test_spec_referenced_from_service_metadata(
    consul: ConsulAgent,
    servers: dict[str, ModelServer],
    make_stack: StackFactory,
    client: httpx.AsyncClient,
) -> None:
    from tests.corpus import SAMPLES

    s = servers["cs-v1-a"]
    await consul.register(
        "chatty-1", "chatty", s.port,
        {"model": "chatty", "version": "1", "protocol": "openai", "spec": "chat-small"},
        health_url=f"{s.url}/health",
    )  # fmt: skip
    text = routes(consul) + f"spec_files: [{json.dumps(str(SAMPLES / 'specs.json'))}]\n"
    stack = await make_stack(text)
    url = stack.url + "/v1/chat/completions"
    msg = [{"role": "user", "content": "hi"}]
    ok = await client.post(url, json={"model": "chatty", "messages": msg, "max_tokens": 10})
    assert ok.status_code == 200 and ok.headers["x-served-by"] == "cs-v1-a"
    bad = await client.post(url, json={"model": "chatty", "messages": msg, "max_tokens": 99999})
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["field"] == "/max_tokens"


async def test_demo_with_consul_registry() -> None:
    import sys

    if consul_binary() is None:
        pytest.skip("no Consul binary: run scripts/install-consul or set CONSUL_BIN")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "extproc", "demo", "--registry", "consul",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "consul agent http://127.0.0.1:" in text
    assert "8/8 requests landed where the router said." in text
