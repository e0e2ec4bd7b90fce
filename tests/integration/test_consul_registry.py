"""Consul as the registry: a real Consul agent, real health checks, real Envoy + router."""

from __future__ import annotations

import asyncio
import dataclasses
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
from extproc.ops.explain import explain_live
from extproc.ops.stack import Stack
from tests.integration.conftest import StackFactory, running
from tests.support import eventually, finish, http_error

pytestmark = pytest.mark.integration

CHAT = {"model": "chat-small", "messages": [{"role": "user", "content": "hello"}]}
REPORT = Path(os.environ.get("MODEL_ROUTER_REPORT_DIR", "/tmp")) / "consul-measurements.txt"
# Ceilings for eventually() (against hangs, not performance claims): a registry change
# reaches the router within a check interval (1 s) and a blocking query's wait (5 s);
# reconnecting after an outage within the watch backoff cap (10 s); start-up within
# startup_timeout_s.
PROPAGATION_S = 60.0
RECOVERY_S = 90.0
STARTUP_S = 60.0


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


async def settles(
    client: httpx.AsyncClient, stack: Stack, want: dict[str, int], **headers: str
) -> None:
    """Wait until ``sum(want)`` requests in a row are spread exactly as ``want``: the
    router has the registry change (round robin makes the split exact)."""
    n = sum(want.values())

    async def spread_is_want() -> bool:
        seen = await spread(client, stack, n, **headers)
        assert seen == want, f"{n} requests went {dict(seen)}"
        return True

    await eventually(spread_is_want, timeout=PROPAGATION_S, what=f"spread {want}")


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
    """A failing health check takes an instance out of rotation, a passing one brings it
    back; every request meanwhile is answered by a chat-small v1 replica."""
    a = servers["cs-v1-a"]
    answers: Counter[str] = Counter()  # every answer while waiting: server, else status
    last_a = 0.0

    async def v1_six() -> Counter[str]:
        nonlocal last_a
        seen = await spread(client, consul_stack, 6, x_model_version="1")
        answers.update(seen)
        if "cs-v1-a" in seen:
            last_a = time.monotonic()
        return seen

    async def only_b() -> bool:
        return await v1_six() == {"cs-v1-b": 6}

    async def a_again() -> bool:
        return "cs-v1-a" in await v1_six()

    a.set_healthy(False)
    failed_at = time.monotonic()
    await eventually(only_b, timeout=PROPAGATION_S, interval=0.05)
    out_after = max(last_a - failed_at, 0.0)
    assert (await spread(client, consul_stack, 20, x_model_version="1")) == {"cs-v1-b": 20}
    a.set_healthy(True)
    back_at = time.monotonic()
    await eventually(a_again, timeout=PROPAGATION_S, interval=0.05)
    back_after = last_a - back_at
    assert set(answers) <= {"cs-v1-a", "cs-v1-b"}, answers
    # Informational (no bound asserted; timing is the benchmarks' business): the README
    # quotes these numbers.
    REPORT.write_text(
        f"health propagation (check interval 1s): out of rotation after {out_after:.2f}s, "
        f"back in rotation after {back_after:.2f}s\n"
    )
    print(REPORT.read_text())


async def test_deregister_and_maintenance_exclude_instances(
    consul: ConsulAgent, consul_stack: Stack, client: httpx.AsyncClient
) -> None:
    await consul.deregister("cs-v1-b")
    await settles(client, consul_stack, {"cs-v1-a": 6}, x_model_version="1")
    await consul.maintenance("cs-v1-a", True)

    async def no_healthy_deployment() -> bool:
        r = await chat(client, consul_stack, x_model_version="1")
        assert r.status_code == 503, (r.status_code, r.text)
        assert http_error(r)["type"] == "no_healthy_deployment", r.text
        return True

    await eventually(no_healthy_deployment, timeout=PROPAGATION_S)
    await consul.maintenance("cs-v1-a", False)
    await settles(client, consul_stack, {"cs-v1-a": 3}, x_model_version="1")


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
    await settles(client, consul_stack, {"cs-v2": 2, "cs-v1-b": 2}, x_model_version="2")
    # The same snapshot took cs-v1-b out of version 1.
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
    err = http_error(r)
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

    async def stale_s() -> float:
        return staleness((await client.get(metrics_url)).text)

    async def in_sync() -> bool:
        return await stale_s() == 0.0

    async def stale_2s() -> bool:
        return await stale_s() >= 2.0

    async def late_instance_serves() -> bool:
        r = await chat(client, consul_stack, x_model_version="2")
        return r.headers.get("x-model-router-deployment") == "chat-small-v2-late"

    router_log = consul_stack.workdir / "router.log"
    workers = [asyncio.create_task(load()) for _ in range(4)]
    try:
        await eventually(lambda: results["200"] >= 20, what="load flowing")
        # In sync: parked blocking queries are fresh, whatever their wait.
        await eventually(in_sync, timeout=PROPAGATION_S)
        await consul.stop()
        before = results["200"]
        # Consul stays down for 3 s while the load keeps routing on the last snapshot.
        await asyncio.sleep(3.0)
        await eventually(stale_2s, timeout=PROPAGATION_S)
        # Requests kept being routed during the outage (counted, not timed).
        await eventually(lambda: results["200"] - before >= 50, what="50 routed during outage")
        await consul.start()  # same data dir: the catalog survives, as in production
        # A new instance registered after the restart must start receiving traffic.
        await consul.register(
            "cs-v2-late", "chat-small", servers["cs-v2"].port,
            {"model": "chat-small", "version": "2", "deployment": "chat-small-v2-late"},
            health_url=f"{servers['cs-v2'].url}/health",
        )  # fmt: skip
        await eventually(late_instance_serves, timeout=RECOVERY_S)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert set(results) == {"200"}, results
    text = (await client.get(metrics_url)).text
    assert "model_router_registry_staleness_seconds" in text
    # Every watch retries within its backoff cap (10 s); the log file is the only signal.
    await eventually(lambda: "Consul reachable again" in router_log.read_text(), timeout=RECOVERY_S)
    await eventually(in_sync, timeout=PROPAGATION_S)  # recovered
    outage_logs = [ln for ln in router_log.read_text().splitlines() if "Consul unreachable" in ln]
    assert len(outage_logs) == 1, outage_logs  # once per outage, not per retry


async def test_not_serving_until_consul_answers(tmp_path: Path) -> None:
    from grpc_health.v1 import health_pb2

    from extproc.ops.procs import PORTS, ManagedProcess, grpc_health, router_argv

    port, mport, dead = PORTS.take(3)  # nothing ever listens on ``dead``
    addr = f"127.0.0.1:{port}"
    serving = health_pb2.HealthCheckResponse.SERVING

    async def start_up(n: int, fallback: str, gave_up: str, want: int) -> None:
        path = tmp_path / f"routes-{n}.yaml"
        path.write_text(
            f"listener: {{port: {port}, metrics_port: {mport}, grace_period_s: 1}}\n"
            f"registry: {{type: consul, consul: {{address: '127.0.0.1:{dead}',"
            f" startup_timeout_s: 1{fallback}}}}}\n"
            "models: {m: {protocol: openai, versions: ['1']}}\n"
            "deployments: [{name: d, model: m, version: '1', endpoints: ['127.0.0.1:9']}]\n"
        )
        log = tmp_path / f"router-{n}.log"
        router = ManagedProcess("router", router_argv(path), log=log)
        await router.start()
        try:

            async def live() -> bool:
                return await grpc_health(addr, "liveness") == serving

            async def readiness_is_want() -> bool:
                return await grpc_health(addr, "readiness") == want

            await eventually(live, timeout=STARTUP_S)
            # Past startup_timeout_s: start-up stopped waiting for Consul and said how it goes on.
            await eventually(lambda: f"Consul not synced at start-up; {gave_up}" in log.read_text())
            await eventually(readiness_is_want, timeout=STARTUP_S)
            if want != serving:  # and it stays so: nothing will ever answer on ``dead``
                assert await grpc_health(addr, "readiness") == want
        finally:
            await router.stop()

    await start_up(
        0, "", "NOT_SERVING until it answers", health_pb2.HealthCheckResponse.NOT_SERVING
    )
    await start_up(1, ", fallback_to_file: true", "routing on the file's deployments", serving)


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

    async def metrics_show_the_states() -> bool:
        text = (await client.get(metrics_url)).text
        missing = [w for w in want if w not in text]
        assert not missing, [ln for ln in text.splitlines() if "endpoints{" in ln]
        return True

    await eventually(metrics_show_the_states, timeout=PROPAGATION_S)
    body = tmp_path / "req.json"
    body.write_text(json.dumps(CHAT))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "extproc", "explain", "--config", str(consul_stack.config_path),
        "--request", str(body), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    result = json.loads(await finish(proc, 120))
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
    assert http_error(bad)["field"] == "/max_tokens"


async def test_demo_with_consul_registry(tmp_path: Path) -> None:
    """The Consul demo runs, and leaves nothing in the temporary directory (it left
    Consul's data dir, about 65 MB, per run)."""
    import sys

    if consul_binary() is None:
        pytest.skip("no Consul binary: run scripts/install-consul or set CONSUL_BIN")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "extproc", "demo", "--registry", "consul",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    text = (await finish(proc)).decode()
    assert proc.returncode == 0, text
    assert "consul agent http://127.0.0.1:" in text
    assert "8/8 requests landed where the router said." in text
    assert os.listdir(tmp_path) == []


async def test_quota_and_cost_from_service_metadata(
    consul: ConsulAgent,
    servers: dict[str, ModelServer],
    make_stack: StackFactory,
    client: httpx.AsyncClient,
) -> None:
    cheap, dear = servers["cs-v1-a"], servers["cs-v1-b"]
    # Slow streams (4 x 0.5 s) from the cheap one: the burst below is decided while its
    # first stream is open.
    cheap.spec = dataclasses.replace(cheap.spec, stream_delay_s=0.5)
    for name, s, meta in (
        ("priced-cheap", cheap, {"deployment": "cheap", "max_inflight": "1",
                                 "cost_per_request": "0.001"}),
        ("priced-dear", dear, {"deployment": "dear", "cost_per_request": "0.01",
                               "cost_per_1k_completion_tokens": "0.5"}),
    ):  # fmt: skip
        await consul.register(
            name, "priced", s.port, {"model": "priced", "version": "1", "protocol": "openai",
                                     **meta}, health_url=f"{s.url}/health",
        )  # fmt: skip
    text = routes(consul) + (
        "  priced: {protocol: openai, versions: ['1'], scheduling: {profile: cost-aware}}\n"
    )
    stack = await make_stack(text)
    url = stack.url + "/v1/chat/completions"
    body = {"model": "priced", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}

    async def served_by(stream: bool = False) -> str:
        r = await client.post(url, json={**body, "stream": stream})
        assert r.status_code == 200, r.text
        return r.headers["x-served-by"]

    async def released() -> bool:  # Envoy's access log has reported the last one done
        text = (await client.get(f"http://{cfg.host}:{cfg.metrics_port}/metrics")).text
        return (
            f'model_router_endpoint_inflight{{deployment="cheap",endpoint="{cheap.address}"}} 0.0'
            in text
        )

    cfg = stack.config.listener
    for _ in range(4):  # one at a time: always the cheap one
        assert await served_by() == "cs-v1-a"
        await eventually(released, timeout=30, what="the request released")
    # three streams at once (each ~2 s at the cheap one): one fits the cheap deployment's quota of 1
    seen = Counter(await asyncio.gather(*(served_by(stream=True) for _ in range(3))))
    assert seen == {"cs-v1-a": 1, "cs-v1-b": 2}
    await eventually(released, timeout=30, what="the streams released")
    live = await explain_live(f"http://{cfg.host}:{cfg.metrics_port}", "POST",
                              "/v1/chat/completions", [], json.dumps(body).encode())  # fmt: skip
    signals = live["scheduling"]["signals"]
    assert signals[cheap.address]["estimated_cost"] == pytest.approx(0.001)
    assert signals[dear.address]["estimated_cost"] == pytest.approx(0.01 + 8 / 1000 * 0.5)
    assert signals[cheap.address]["quota_use"] == 0.0
