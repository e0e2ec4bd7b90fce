"""Router failure modes, reloads under load, worker supervision, graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from grpc_health.v1 import health_pb2

from extproc.dev.model_servers import ModelServer
from extproc.ops.procs import grpc_health
from extproc.ops.stack import Stack
from tests.integration.conftest import RESNET, StackFactory, routes_for
from tests.support import eventually, http_error

pytestmark = pytest.mark.integration

CHAT = {"model": "chat-small", "messages": [{"role": "user", "content": "hello"}]}


async def _kill_router(stack: Stack) -> None:
    assert stack.router is not None
    stack.router.signal(signal.SIGKILL)
    assert stack.router.proc is not None
    await stack.router.proc.wait()


async def test_fail_closed_router_down_gives_json_503(
    model_servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    stack = await make_stack(routes_for(model_servers), failure_mode="closed")
    assert (await client.post(stack.url + "/v1/chat/completions", json=CHAT)).status_code == 200
    await _kill_router(stack)
    before = sum(s.count for s in model_servers.values())
    # Envoy's own 503 (local reply mapping) in each path's protocol shape.
    for path, body, headers in (
        ("/v1/chat/completions", CHAT, {}),
        ("/v1/models", None, {}),
        ("/v2/models/resnet50/infer", {}, {}),
        ("/v2/health/ready", None, {}),
        ("/score", {}, {"x-model": "fraud-xgb"}),
    ):
        method = "GET" if body is None else "POST"
        r = await client.request(method, stack.url + path, json=body, headers=headers)
        assert r.status_code == 503, r.text
        assert http_error(r)["type"] == "router_unavailable"
    # A client-chosen endpoint is not honoured either.
    r = await client.post(
        stack.url + "/v2/models/resnet50/infer",
        json={},
        headers={"x-gateway-destination-endpoint": model_servers["resnet50-v1"].address},
    )
    assert r.status_code == 503
    assert sum(s.count for s in model_servers.values()) == before


FAIL_OPEN_CALLS: list[tuple[str, str, dict[str, object], dict[str, str]]] = [
    # (model it must reach, path, body, headers)
    ("chat-small", "/v1/chat/completions", CHAT, {}),
    ("chat-small", "/v1/chat/completions", CHAT, {"x-model-version": "2"}),
    ("embed-mini", "/v1/embeddings", {"model": "embed-mini", "input": "x"}, {}),
    ("resnet50", "/v2/models/resnet50/versions/2/infer", RESNET, {}),
    ("fraud-xgb", "/score", {}, {"x-model": "fraud-xgb"}),
]


async def test_fail_open_router_killed_mid_load_serves_every_request_at_its_own_model(
    model_servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    """Envoy keeps the last clusters and routes the router pushed: with the router killed
    under load, every request still reaches its own model (0 errors), marked as fail-open,
    and chat-large (what no request names) is never touched."""
    stack = await make_stack(routes_for(model_servers), failure_mode="open")
    decoy = model_servers["chat-large-v1"]

    def decoy_requests() -> int:  # Envoy's active health checks are counted apart
        return decoy.count

    decoy_before, probes_before = decoy_requests(), decoy.health_checks
    killed = asyncio.Event()
    outcomes: Counter[str] = Counter()

    async def caller(i: int) -> None:
        deadline = time.monotonic() + 20  # bounded even if the kill never happens
        while time.monotonic() < deadline:
            model, path, body, headers = FAIL_OPEN_CALLS[i % len(FAIL_OPEN_CALLS)]
            i += 1
            after_kill = killed.is_set()
            r = await client.post(stack.url + path, json=body, headers=headers)
            served = r.headers.get("x-served-model")
            ok = r.status_code == 200 and served == model
            outcomes["ok" if ok else f"bad:{r.status_code}:{model}->{served}"] += 1
            if after_kill:
                outcomes["marked" if r.headers.get("x-model-router-fail-open") == "1" else
                         "unmarked-after-kill"] += 1  # fmt: skip
                if outcomes["marked"] >= 100:
                    return
            if headers.get("x-model-version") == "2" and ok:
                assert r.headers["x-served-version"] == "2"

    callers = [asyncio.create_task(caller(i)) for i in range(8)]
    await eventually(lambda: outcomes["ok"] >= 50, timeout=30, what="load before the kill")
    await _kill_router(stack)
    killed.set()
    await asyncio.gather(*callers)
    assert set(outcomes) == {"ok", "marked"}, outcomes
    assert decoy_requests() == decoy_before
    # Envoy's probes (User-Agent Envoy/HC) keep reaching it, and are counted apart.
    await eventually(lambda: decoy.health_checks > probes_before, timeout=60, what="a probe")
    assert decoy_requests() == decoy_before
    stats = (await client.get(stack.admin_url + "/stats?filter=failure_mode_allowed")).text
    allowed = [int(line.split(":")[1]) for line in stats.splitlines() if line.strip()]
    assert allowed and sum(allowed) >= outcomes["marked"], stats


async def test_fail_open_unknown_model_is_a_json_503(
    model_servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    stack = await make_stack(routes_for(model_servers), failure_mode="open")
    await _kill_router(stack)
    # A client-chosen endpoint is stripped before routing, so it cannot steer now either.
    evil = model_servers["chat-large-v1"].address
    r = await client.post(
        stack.url + "/v2/models/resnet50/infer",
        json=RESNET,
        headers={"x-gateway-destination-endpoint": evil},
    )
    assert r.status_code == 200 and r.headers["x-served-model"] == "resnet50"
    # The routes' catch-alls, in each path's protocol shape.
    for method, path, headers in (
        ("POST", "/v2/models/nope/infer", {}),
        ("GET", "/v2/health/live", {}),
        ("POST", "/v1/responses", {}),
        ("POST", "/anything", {"x-model": "nope"}),
    ):
        r = await client.request(method, stack.url + path, json={}, headers=headers)
        assert r.status_code == 503 and http_error(r)["type"] == "router_unavailable", r.text


async def _load(
    client: httpx.AsyncClient, url: str, stop: asyncio.Event, results: Counter[str]
) -> None:
    while not stop.is_set():
        try:
            r = await client.post(url + "/v1/chat/completions", json=CHAT)
            results[str(r.status_code)] += 1
            if r.status_code == 200:
                results["by:" + r.headers["x-served-by"]] += 1
        except httpx.HTTPError as exc:
            results[f"exc:{type(exc).__name__}"] += 1


async def test_reload_under_load_loses_no_request(
    model_servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    stack = await make_stack(routes_for(model_servers))
    path = stack.config_path
    original = path.read_text()
    v2 = model_servers["chat-small-v2"].address
    # Reload target: chat-small only on version 2.
    only_v2 = original.replace(
        '{name: "chat-small-v1", ', '{name: "chat-small-v1", enabled: false, '
    )
    assert only_v2 != original
    stop = asyncio.Event()
    results: Counter[str] = Counter()
    log = stack.workdir / "router.log"
    rejected = (
        "reload rejected, keeping the previous routing file: line 1, column 27: not valid YAML"
    )
    workers = [asyncio.create_task(_load(client, stack.url, stop, results)) for _ in range(8)]
    try:
        # At least 15 flips, at least 200 requests served across them; bounded by a
        # deadline (a ceiling against hangs, not a throughput claim).
        deadline = time.monotonic() + 120
        flips = 0
        while flips < 15 or results["200"] < 200:
            assert time.monotonic() < deadline, (flips, results)
            await asyncio.sleep(0.4)  # pacing: let the watcher and the load see each file
            path.write_text(only_v2 if flips % 2 == 0 else original)
            if flips % 3 == 2:  # and SIGHUP too
                assert stack.router is not None
                stack.router.signal(signal.SIGHUP)
            flips += 1
        # An invalid file is rejected, under load, and the last good one keeps serving.
        path.write_text("models: [this is not valid")
        await eventually(lambda: rejected in log.read_text(), timeout=60)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    statuses = {k: v for k, v in results.items() if not k.startswith("by:")}
    assert set(statuses) == {"200"}, statuses
    assert results["by:chat-small-v2"] > 0 and results["by:chat-small-v1-a"] > 0
    cfg = stack.config
    metrics = (await client.get(f"http://127.0.0.1:{cfg.listener.metrics_port}/metrics")).text
    # The invalid file was rejected (a non-atomic rewrite caught half-written may be too:
    # it is refused, never applied, which is why no request failed above).
    errors = next(
        line for line in metrics.splitlines()
        if line.startswith('model_router_config_reloads_total{result="error"}')
    )  # fmt: skip
    assert float(errors.split()[-1]) >= 1
    success = next(
        line for line in metrics.splitlines()
        if line.startswith('model_router_config_reloads_total{result="success"}')
    )  # fmt: skip
    assert float(success.split()[-1]) >= 5
    # After the invalid file, the last good snapshot (the original, or only v2) still routes.
    r = await client.post(stack.url + "/v1/chat/completions", json=CHAT)
    assert r.status_code == 200
    assert v2


async def test_workers_are_supervised_and_share_load(
    model_servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    stack = await make_stack(routes_for(model_servers), workers=2)
    cfg = stack.config
    assert list(stack.ports.ext_proc_ports) == [cfg.listener.port, cfg.listener.port + 1]
    for _ in range(40):
        r = await client.post(stack.url + "/v2/models/resnet50/infer", json=RESNET)
        assert r.status_code == 200
    per_worker = []
    for i in range(2):
        text = (await client.get(f"http://127.0.0.1:{cfg.listener.metrics_port + i}/metrics")).text
        line = next(
            ln for ln in text.splitlines()
            if ln.startswith('model_router_requests_total{model="resnet50",outcome="routed"}')
        )  # fmt: skip
        per_worker.append(float(line.split()[-1]))
    assert all(n > 0 for n in per_worker), per_worker  # Envoy spreads streams over both
    # Kill one worker: the supervisor restarts it and it serves again.
    import os

    pids = _child_pids(stack.router.pid if stack.router else 0)
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)

    def restarted() -> list[int]:
        new = _child_pids(stack.router.pid if stack.router else 0)
        assert len(new) == 2 and pids[0] not in new, (pids, new)
        return new

    await eventually(restarted, timeout=60, what="the supervisor restarts the killed worker")
    serving = health_pb2.HealthCheckResponse.SERVING
    addr0 = f"127.0.0.1:{cfg.listener.port}"
    addr1 = f"127.0.0.1:{cfg.listener.port + 1}"

    async def restarted_worker_ready() -> bool:
        return await grpc_health(addr0, "readiness") == serving

    await eventually(restarted_worker_ready, timeout=60)
    assert await grpc_health(addr1, "readiness") == serving  # the other one never stopped
    ok = 0
    for _ in range(20):
        r = await client.post(stack.url + "/v2/models/resnet50/infer", json=RESNET)
        ok += r.status_code == 200
    assert ok == 20


def _child_pids(ppid: int) -> list[int]:
    import os

    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == ppid:
            out.append(int(entry))
    return sorted(out)


async def test_graceful_shutdown_not_serving_then_drains(tmp_path: Path) -> None:
    """SIGTERM: health turns NOT_SERVING while an open stream still completes."""
    import grpc
    from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
    from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

    from extproc.core.envoy_wire import processing_messages
    from extproc.ops.procs import PORTS, ManagedProcess, router_argv, wait_grpc_serving

    port, mport = PORTS.take(2)
    path = tmp_path / "routes.yaml"
    # NOT_SERVING shows for drain_delay_s before the server stops taking new calls.
    path.write_text(
        f"listener: {{port: {port}, metrics_port: {mport}, grace_period_s: 5, drain_delay_s: 3}}\n"
        "models: {chat-small: {protocol: openai, versions: ['1']}}\n"
        "deployments: [{name: d, model: chat-small, version: '1', endpoints: ['127.0.0.1:9']}]\n"
    )
    router = ManagedProcess("router", router_argv(path), log=tmp_path / "router.log")
    await router.start()
    addr = f"127.0.0.1:{port}"
    try:
        await wait_grpc_serving(addr, proc=router)
        head, body = processing_messages(
            "POST",
            "/v1/chat/completions",
            [],
            b'{"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}',
        )
        async with grpc.aio.insecure_channel(addr) as channel:
            call = ep_grpc.ExternalProcessorStub(channel).Process()
            await call.write(head)
            first = await call.read()
            assert first.HasField("request_headers")  # the router now waits for the body
            router.signal(signal.SIGTERM)

            async def not_serving() -> bool:
                status = await grpc_health(addr, "readiness")
                return status == health_pb2.HealthCheckResponse.NOT_SERVING

            await eventually(not_serving, timeout=30)
            await call.write(body)  # the in-flight stream still completes
            second: ep.ProcessingResponse = await call.read()
            assert second.HasField("request_body")
            await call.done_writing()
        assert router.proc is not None
        assert await asyncio.wait_for(router.proc.wait(), 60) == 0  # a guard against hangs
    finally:
        await router.stop()
