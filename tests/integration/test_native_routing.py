"""Native routing: Envoy routes static decisions itself (no ext_proc hop), from the routes
the router serves it over xDS, with the same contract as the router."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from extproc.dev.model_servers import ModelServer, ModelServerSpec
from extproc.ops.stack import Stack
from tests.integration.conftest import StackFactory, running
from tests.support import http_error

pytestmark = pytest.mark.integration

SPECS = [
    ModelServerSpec("k1-a", "kserve_v2", "kmodel", "1"),
    ModelServerSpec("k1-b", "kserve_v2", "kmodel", "1"),
    ModelServerSpec("k2", "kserve_v2", "kmodel", "2"),
    ModelServerSpec("g1", "kserve_v2", "gmodel", "1"),
    ModelServerSpec("o1", "openai", "omodel", "1"),
    ModelServerSpec("c1", "openai", "chat", "1"),
]
TENSOR = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 0.5]}]}
JSON = {"content-type": "application/json"}


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, ModelServer]]:
    async with running(SPECS) as started:
        yield started


def routes(s: dict[str, ModelServer]) -> str:
    return f"""
limits: {{max_body_bytes: 65536}}
models:
  kmodel: {{protocol: kserve_v2, versions: ["1", "2"]}}
  gmodel: {{protocol: generic, versions: ["1"]}}
  omodel: {{protocol: openai, versions: ["1"], native: true}}
  chat: {{protocol: openai, versions: ["1"]}}
  parked: {{protocol: generic, versions: ["1"]}}
deployments:
  - {{name: k1, model: kmodel, version: "1",
     endpoints: ["{s["k1-a"].address}", "{s["k1-b"].address}"]}}
  - {{name: k2, model: kmodel, version: "2", endpoints: ["{s["k2"].address}"]}}
  - {{name: g1, model: gmodel, version: "1", endpoints: ["{s["g1"].address}"]}}
  - {{name: o1, model: omodel, version: "1", endpoints: ["{s["o1"].address}"]}}
  - {{name: c1, model: chat, version: "1", endpoints: ["{s["c1"].address}"]}}
  - {{name: parked, model: parked, version: "1", endpoints: ["{s["c1"].address}"],
     enabled: false}}
"""


async def router_requests(client: httpx.AsyncClient, stack: Stack) -> float:
    """Requests the router has seen (``model_router_requests_total``, all labels)."""
    cfg = stack.config
    text = (
        await client.get(f"http://{cfg.listener.host}:{cfg.listener.metrics_port}/metrics")
    ).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("model_router_requests_total{")
    )


@pytest.fixture
async def stack(servers: dict[str, ModelServer], make_stack: StackFactory) -> Stack:
    return await make_stack(routes(servers))


async def test_kserve_and_x_model_requests_skip_the_router(
    stack: Stack, servers: dict[str, ModelServer], client: httpx.AsyncClient
) -> None:
    before = await router_requests(client, stack)
    url = stack.url
    r = await client.post(url + "/v2/models/kmodel/versions/2/infer", json=TENSOR)
    assert r.status_code == 200 and r.headers["x-served-by"] == "k2"
    assert r.headers["x-model-router-model"] == "kmodel"
    assert r.headers["x-model-router-version"] == "2"
    assert r.headers["x-model-router-deployment"] == "k2"
    upstream = servers["k2"].received[-1].headers
    assert "x-gateway-destination-endpoint" not in upstream  # nobody picked: Envoy did
    assert "x-model-router-cluster" not in upstream
    seen = set()
    for _ in range(6):  # round robin over v1's two endpoints (x-model-version fills in)
        r = await client.post(
            url + "/v2/models/kmodel/infer", json=TENSOR, headers={"x-model-version": "1"}
        )
        assert r.status_code == 200 and r.headers["x-model-router-version"] == "1"
        seen.add(r.headers["x-served-by"])
    assert seen == {"k1-a", "k1-b"}
    r = await client.post(url + "/score", json={}, headers={"x-model": "gmodel"})
    assert r.status_code == 200 and r.headers["x-served-by"] == "g1"
    assert await router_requests(client, stack) == before


async def test_openai_model_opted_in_is_routed_by_envoy_from_the_body(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    before = await router_requests(client, stack)
    body = {"model": "omodel", "messages": [{"role": "user", "content": "hi"}]}
    r = await client.post(stack.url + "/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["x-served-by"] == "o1"
    assert r.headers["x-model-router-model"] == "omodel"
    assert await router_requests(client, stack) == before
    # A model on the default (the router checks OpenAI bodies) goes through the router.
    body["model"] = "chat"
    r = await client.post(stack.url + "/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["x-served-by"] == "c1"
    assert await router_requests(client, stack) == before + 1


async def test_native_errors_keep_the_router_contract(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    before = await router_requests(client, stack)
    url = stack.url
    r = await client.post(url + "/v2/models/kmodel/versions/9/infer", json=TENSOR)
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert r.headers["x-model-router-error"] == "version_not_found"
    assert http_error(r)["type"] == "version_not_found"
    r = await client.post(url + "/score", json={}, headers={"x-model": "gmodel",
                                                            "x-model-version": "7"})  # fmt: skip
    assert r.status_code == 404 and http_error(r)["type"] == "version_not_found"
    r = await client.post(url + "/score", json={}, headers={"x-model": "parked"})
    assert r.status_code == 503 and http_error(r)["type"] == "no_healthy_deployment"
    big = json.dumps({"inputs": [], "pad": "x" * 70000})
    r = await client.post(url + "/v2/models/kmodel/infer", content=big, headers=JSON)
    assert r.status_code == 413 and r.headers["content-type"] == "application/json"
    assert await router_requests(client, stack) == before


async def test_what_envoy_cannot_decide_goes_to_the_router(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    url = stack.url
    before = await router_requests(client, stack)
    r = await client.post(
        url + "/v2/models/kmodel/infer",
        json=TENSOR,
        headers={"x-model-capabilities": "accelerator=gpu"},
    )  # capabilities: only the router matches them (none here)
    assert r.status_code == 503 and http_error(r)["type"] == "no_healthy_deployment"
    r = await client.post(
        url + "/v2/models/kmodel/infer", content=b"{}", headers={"content-type": "text/plain"}
    )
    assert r.status_code == 415 and http_error(r)["type"] == "unsupported_media_type"
    r = await client.post(url + "/score", json={}, headers={"x-model": "nope"})
    assert r.status_code == 404 and http_error(r)["type"] == "model_not_found"
    r = await client.post(url + "/v1/chat/completions", content=b"{not json", headers=JSON)
    assert r.status_code == 400 and http_error(r)["type"] == "invalid_body"
    assert await router_requests(client, stack) == before + 4


EXPLAIN_CASES = [
    ("POST", "/v2/models/kmodel/versions/2/infer", {}, TENSOR),
    ("POST", "/v2/models/kmodel/infer", {"content-type": "text/plain"}, TENSOR),
    ("POST", "/v2/models/kmodel/infer", {"x-model-capabilities": "a=b"}, TENSOR),
    ("GET", "/v2/models/kmodel/ready", {}, None),
    ("POST", "/score", {"x-model": "gmodel"}, {}),
    ("POST", "/v1/chat/completions", {}, {"model": "omodel", "messages": []}),  # not checked
    ("POST", "/v1/chat/completions", {}, {"model": "chat", "messages": []}),  # router: 400
    ("POST", "/v2/models/kmodel/versions/9/infer", {}, TENSOR),  # Envoy: 404
]


@pytest.mark.parametrize(("method", "path", "headers", "body"), EXPLAIN_CASES)
async def test_explain_says_which_path_envoy_takes(
    stack: Stack,
    client: httpx.AsyncClient,
    method: str,
    path: str,
    headers: dict[str, str],
    body: object,
) -> None:
    from extproc.control.reload import load_routing
    from extproc.ops.explain import explain_request

    hdrs = {"content-type": "application/json", **headers}
    raw = json.dumps(body).encode() if body is not None else None
    explained = await explain_request(
        load_routing(stack.config_path), method, path, list(hdrs.items()), raw
    )
    before = await router_requests(client, stack)
    await client.request(method, stack.url + path, content=raw, headers=hdrs)
    went_to_router = await router_requests(client, stack) > before
    assert explained["envoy"]["path"] == ("ext_proc" if went_to_router else "native"), explained
