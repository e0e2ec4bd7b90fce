"""End to end through a real Envoy, the real router and real model servers."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from extproc.dev.model_servers import ModelServer
from extproc.ops.stack import Stack
from tests.corpus import load_cases
from tests.integration.conftest import FRAUD, RESNET, StackFactory, routes_for
from tests.support import http_error

pytestmark = pytest.mark.integration

ROUTABLE = [c for c in load_cases() if c.routable]
CHAT = {"model": "chat-small", "messages": [{"role": "user", "content": "hello"}]}


def served(resp: httpx.Response) -> tuple[str, str, str]:
    return (
        resp.headers["x-served-by"],
        resp.headers["x-served-model"],
        resp.headers["x-served-version"],
    )


def assert_error(resp: httpx.Response, status: int, etype: str | None = None) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    err = http_error(resp)  # in the path's protocol shape, type and field from the headers
    if etype is not None:
        assert err["type"] == etype
    assert "x-served-by" not in resp.headers  # never reached a model server
    return err


async def test_corpus_routable_cases_land_on_the_right_server(
    corpus_stack: Stack, client: httpx.AsyncClient, model_servers: dict[str, ModelServer]
) -> None:
    assert ROUTABLE, "corpus has no routable cases"
    for case in ROUTABLE:
        resp = await client.request(
            case.method, corpus_stack.url + case.path, headers=case.headers, content=case.body
        )
        assert resp.status_code == 200, (case.id, resp.status_code, resp.text)
        by, model, version = served(resp)
        assert model == case.expect["model"], case.id
        if case.expect["version"] is not None:
            assert version == case.expect["version"], case.id
        # The router's decision is echoed by Envoy and matches where it landed.
        assert resp.headers["x-model-router-model"] == model, case.id
        assert resp.headers["x-model-router-version"] == version, case.id
        assert resp.headers["x-model-router-deployment"] == f"{model}-v{version}", case.id
        assert resp.headers["x-model-router-endpoint"] == model_servers[by].address, case.id
        # Every corpus model has a spec, so the router decided: the upstream got its
        # endpoint list (primary first, then fallbacks).
        got = model_servers[by].received[-1].headers
        picked = got["x-gateway-destination-endpoint"].split(",")
        assert picked[0] == model_servers[by].address, case.id
        assert "x-model-router-fail-open" not in resp.headers, case.id


async def test_round_robin_spreads_over_replicas(
    corpus_stack: Stack, client: httpx.AsyncClient
) -> None:
    seen = []
    for _ in range(6):
        r = await client.post(
            corpus_stack.url + "/v1/chat/completions",
            json=CHAT,
            headers={"x-model-version": "1"},
        )
        assert r.status_code == 200
        seen.append(r.headers["x-served-by"])
    assert seen.count("chat-small-v1-a") == 3 and seen.count("chat-small-v1-b") == 3


async def test_sse_stream_arrives_in_chunks(corpus_stack: Stack, client: httpx.AsyncClient) -> None:
    body = {**CHAT, "stream": True}
    arrivals: list[float] = []
    events = 0
    async with client.stream("POST", corpus_stack.url + "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for chunk in r.aiter_raw():
            arrivals.append(time.monotonic())
            events += chunk.count(b"data: ")
    assert events >= 6  # 5 chunks + [DONE]
    assert len(arrivals) >= 4, "response was buffered into too few chunks"
    assert arrivals[-1] - arrivals[0] >= 0.15, "chunks did not arrive incrementally"


async def test_client_routing_headers_cannot_steer(
    corpus_stack: Stack, client: httpx.AsyncClient, model_servers: dict[str, ModelServer]
) -> None:
    evil = model_servers["chat-large-v1"].address
    for path, body in (
        ("/v2/models/resnet50/versions/1/infer", RESNET),  # body read: resnet50 has a spec
        ("/v1/embeddings", {"model": "embed-mini", "input": "x"}),  # body decision
        ("/score", {}),  # generic x-model: headers-only decision, body never read
    ):
        r = await client.post(
            corpus_stack.url + path,
            json=body,
            headers={
                "x-model": "fraud-xgb",  # used by the generic path only
                "x-gateway-destination-endpoint": evil,
                "x-model-router-model": "chat-large",
                "x-model-router-deployment": "chat-large-v1",
                "x-model-router-version": "9",
            },
        )
        assert r.status_code == 200
        assert r.headers["x-served-by"] != "chat-large-v1"
        assert r.headers["x-model-router-model"] == r.headers["x-served-model"]
        received = model_servers[r.headers["x-served-by"]].received[-1].headers
        assert received["x-model-router-deployment"] != "chat-large-v1"
        assert "," not in received["x-gateway-destination-endpoint"]  # not appended


async def test_error_cases_return_documented_status_and_json(
    corpus_stack: Stack, client: httpx.AsyncClient
) -> None:
    url = corpus_stack.url
    json_h = {"content-type": "application/json"}
    r = await client.post(url + "/v2/models/nope/infer", json={"inputs": []})
    assert assert_error(r, 404, "model_not_found")["field"] is None
    r = await client.post(url + "/v1/chat/completions", json={**CHAT, "model": "nope"})
    assert assert_error(r, 404, "model_not_found")["field"] == "/model"
    r = await client.post(url + "/v2/models/resnet50/versions/9/infer", json={"inputs": []})
    assert_error(r, 404, "version_not_found")
    r = await client.post(url + "/v1/chat/completions", content=b"{oops", headers=json_h)
    assert_error(r, 400, "invalid_body")
    r = await client.post(url + "/v1/chat/completions", json={"messages": []})
    assert assert_error(r, 400, "invalid_request")["field"] == "/model"
    r = await client.post(
        url + "/v1/chat/completions", content=b"{}", headers={"content-type": "text/plain"}
    )
    assert_error(r, 415, "unsupported_media_type")
    r = await client.get(url + "/v1/chat/completions")
    assert_error(r, 405, "method_not_allowed")
    r = await client.post(url + "/api/summarize", json={})
    assert_error(r, 400, "invalid_request")
    big = b'{"model": "chat-small", "pad": "' + b"x" * (1024 * 1024) + b'"}'
    r = await client.post(url + "/v1/chat/completions", content=big, headers=json_h)
    assert_error(r, 413)
    # Envoy's own 413 (buffer filter) in each path's protocol shape, with the type header.
    for path, headers in (("/v2/models/resnet50/infer", json_h),
                          ("/api/summarize", {**json_h, "x-model": "fraud-xgb"})):  # fmt: skip
        r = await client.post(url + path, content=big, headers=headers)
        assert_error(r, 413, "payload_too_large")

    async def chunked() -> object:
        for _ in range(20):
            yield b"x" * 65536

    r = await client.post(url + "/v1/chat/completions", content=chunked(), headers=json_h)
    assert_error(r, 413)


async def test_no_healthy_deployment_and_dead_endpoint(
    model_servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    routes = routes_for(model_servers).replace(
        'version: "3", endpoints:', 'version: "3", enabled: false, endpoints:'
    )
    extra = '  - {name: ghost, model: "resnet50", version: "2", endpoints: ["127.0.0.1:1"], weight: 1000}\n'
    stack = await make_stack(routes + extra)
    r = await client.post(stack.url + "/v2/models/fraud-xgb/infer", json=FRAUD)
    err = assert_error(r, 503, "no_healthy_deployment")
    assert "disabled" in str(err["message"])
    # A deployment whose endpoint refuses connections: Envoy's 503 becomes our JSON.
    statuses = set()
    for _ in range(4):
        r = await client.post(stack.url + "/v2/models/resnet50/versions/2/infer", json=RESNET)
        statuses.add(r.status_code)
        if r.status_code != 200:
            assert_error(r, 503, "upstream_unavailable")
    assert statuses == {200, 503}


async def test_long_prompts_route_up_to_the_default_limit(
    model_servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    # No specs here: chat-small's spec caps prompts at 16,000 characters.
    routes = routes_for(model_servers).replace("limits: {max_body_bytes: 1048576}", "")
    routes = "\n".join(ln for ln in routes.splitlines() if not ln.startswith("spec_files"))
    stack = await make_stack(routes)
    for size in (300 * 1024, 4 * 1024 * 1024 - 200):
        pad = "y" * (size - 100)
        body = json.dumps({**CHAT, "messages": [{"role": "user", "content": pad}]}).encode()
        assert len(body) <= 4 * 1024 * 1024
        r = await client.post(
            stack.url + "/v1/chat/completions",
            content=body,
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 200, (size, r.text)
        assert r.headers["x-served-model"] == "chat-small"
    over = b"z" * (4 * 1024 * 1024 + 1)
    r = await client.post(
        stack.url + "/v1/chat/completions",
        content=over,
        headers={"content-type": "application/json"},
    )
    assert_error(r, 413)


async def test_metrics_and_health(corpus_stack: Stack, client: httpx.AsyncClient) -> None:
    from grpc_health.v1 import health_pb2

    from extproc.ops.procs import grpc_health

    cfg = corpus_stack.config
    addr = f"{cfg.listener.host}:{cfg.listener.port}"
    for svc in ("", "liveness", "readiness", "envoy.service.ext_proc.v3.ExternalProcessor"):
        assert await grpc_health(addr, svc) == health_pb2.HealthCheckResponse.SERVING
    await client.post(corpus_stack.url + "/v1/chat/completions", json=CHAT)
    await client.post(corpus_stack.url + "/v2/models/nope/infer", json={})
    text = (
        await client.get(f"http://{cfg.listener.host}:{cfg.listener.metrics_port}/metrics")
    ).text
    assert 'model_router_requests_total{model="chat-small",outcome="routed"}' in text
    assert 'model_router_requests_total{model="__unregistered__",outcome="rejected"}' in text
    assert 'model_router_errors_total{status="404",type="model_not_found"}' in text
    assert 'model_router_request_duration_seconds_bucket{le="0.001",path="body"}' in text
    assert 'model_router_phase_duration_seconds_count{phase="body_transfer"}' in text
    assert "model_router_inflight_streams" in text
    assert 'model_router_config_reloads_total{result="success"} 1.0' in text
    assert 'model_router_registry_endpoints{deployment="chat-small-v1",model="chat-small"' in text
