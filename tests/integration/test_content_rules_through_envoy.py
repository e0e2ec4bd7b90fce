"""Content rules through real Envoy: same endpoint, different content, different servers."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import yaml

from extproc.dev.model_servers import ModelServer, ModelServerSpec
from tests.integration.conftest import StackFactory, running
from tests.support import ROOT

pytestmark = pytest.mark.integration

SPECS = [
    ModelServerSpec("small", "openai", "chat-small", "1"),
    ModelServerSpec("large", "openai", "chat-large", "1"),
    ModelServerSpec("medical", "openai", "chat-large", "1"),
    ModelServerSpec("cpu-pool", "kserve_v2", "resnet50", "1"),
    ModelServerSpec("gpu-pool", "kserve_v2", "resnet50", "1"),
]


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, ModelServer]]:
    async with running(SPECS) as started:
        yield started


def routes(s: dict[str, ModelServer]) -> str:
    return f"""
models:
  chat-small: {{protocol: openai, versions: ["1"]}}
  chat-large: {{protocol: openai, versions: ["1"]}}
  resnet50: {{protocol: kserve_v2, versions: ["1"]}}
deployments:
  - {{name: small, model: chat-small, version: "1", endpoints: ["{s["small"].address}"]}}
  - {{name: large, model: chat-large, version: "1", endpoints: ["{s["large"].address}"],
     tags: {{domain: general}}}}
  - {{name: medical, model: chat-large, version: "1", endpoints: ["{s["medical"].address}"],
     tags: {{domain: medical}}}}
  - {{name: cpu-pool, model: resnet50, version: "1", endpoints: ["{s["cpu-pool"].address}"],
     tags: {{accelerator: cpu}}}}
  - {{name: gpu-pool, model: resnet50, version: "1", endpoints: ["{s["gpu-pool"].address}"],
     tags: {{accelerator: gpu}}}}
rules:
  - name: medical
    when:
      any:
        - body_field: {{pointer: /metadata/domain, equals: medical}}
        - last_user_message: {{regex: "(?i)\\\\b(patient|diagnos\\\\w*|symptoms?)\\\\b"}}
    route: {{model: chat-large, capabilities: "domain=medical"}}
  - name: tools-or-long-to-large
    when:
      model: chat-small
      any:
        - has: [tools]
        - prompt_chars: {{gt: 2000}}
    route: {{model: chat-large, capabilities: "domain=general"}}
  - name: big-batches-to-gpu
    when: {{protocol: kserve_v2, batch_size: {{gte: 32}}}}
    route: {{capabilities: "accelerator=gpu"}}
  - name: small-batches-to-cpu
    when: {{protocol: kserve_v2, batch_size: {{lt: 32}}}}
    route: {{capabilities: "accelerator=cpu"}}
"""


def chat(text: str, **extra: object) -> dict[str, object]:
    return {"model": "chat-small", "messages": [{"role": "user", "content": text}], **extra}


def tensor(batch: int) -> dict[str, object]:
    return {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [batch, 2], "data": [0.0] * (2 * batch)}
        ]
    }


async def test_content_decides_the_server_and_the_upstream_sees_the_rewrite(
    servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    stack = await make_stack(routes(servers))
    url = stack.url + "/v1/chat/completions"
    cases = [
        (chat("hi there"), "small", "chat-small"),
        (
            chat("hi", tools=[{"type": "function", "function": {"name": "f"}}]),
            "large",
            "chat-large",
        ),
        (chat("x" * 3000), "large", "chat-large"),
        (chat("my patient has symptoms of flu"), "medical", "chat-large"),
        (chat("hello", metadata={"domain": "medical"}), "medical", "chat-large"),
    ]
    for body, server, model in cases:
        raw = json.dumps(body).encode()
        r = await client.post(url, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        assert r.headers["x-served-by"] == server, body
        assert r.headers["x-model-router-model"] == model
        assert r.json()["model"] == model  # the upstream read the (rewritten) body's model
        got = servers[server].received[-1]
        if model != "chat-small":
            rewritten = json.dumps({**body, "model": model}, separators=(",", ":")).encode()
            assert got.body_len == len(rewritten)
            assert got.headers["content-length"] == str(len(rewritten))
        else:
            assert got.body_len == len(raw)
    # A gzip body that gets rewritten is sent inflated, without content-encoding.
    body = chat("hi", tools=[{"type": "function", "function": {"name": "f"}}])
    r = await client.post(
        url,
        content=gzip.compress(json.dumps(body).encode()),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert r.status_code == 200 and r.headers["x-served-by"] == "large"
    assert "content-encoding" not in servers["large"].received[-1].headers
    assert r.json()["model"] == "chat-large"


async def test_kserve_batch_size_picks_the_pool(
    servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    stack = await make_stack(routes(servers))
    url = stack.url + "/v2/models/resnet50/infer"
    for batch, pool in ((1, "cpu-pool"), (31, "cpu-pool"), (32, "gpu-pool"), (64, "gpu-pool")):
        r = await client.post(url, json=tensor(batch))
        assert r.status_code == 200, r.text
        assert r.headers["x-served-by"] == pool, batch
    cfg = stack.config
    text = (await client.get(f"http://127.0.0.1:{cfg.listener.metrics_port}/metrics")).text
    assert 'model_router_rule_matches_total{rule="big-batches-to-gpu"} 2.0' in text
    assert 'model_router_rule_matches_total{rule="small-batches-to-cpu"} 2.0' in text


BATCH_SPECS = [
    ModelServerSpec("resnet50-gpu", "kserve_v2", "resnet50", "1"),
    ModelServerSpec("resnet50-cpu", "kserve_v2", "resnet50", "1"),
    ModelServerSpec("fraud-xgb-cpu", "kserve_v2", "fraud-xgb", "3"),
]


def batch_routes(servers: dict[str, ModelServer]) -> str:
    """``examples/rules-batch.yaml`` as shipped (models, deployments, rules), each
    deployment served by the dev server of the same name; ports come from make_stack."""
    doc = yaml.safe_load((ROOT / "examples" / "rules-batch.yaml").read_text())
    for key in ("listener", "envoy", "failure_mode"):
        doc.pop(key)
    for dep in doc["deployments"]:
        dep["endpoints"] = [servers[dep["name"]].address]
    return str(yaml.safe_dump(doc, sort_keys=False))


async def test_kserve_ready_and_metadata_gets_route_under_body_reading_rules(
    make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    """Regression: with rules-batch.yaml, GET .../ready and the metadata GET answered 400
    invalid_body (the router asked for a body these calls never have). They reach one
    of the model's servers and answer 200; infer calls still route on the batch size."""
    async with running(BATCH_SPECS) as servers:
        stack = await make_stack(batch_routes(servers))
        pools = {"resnet50-gpu", "resnet50-cpu"}
        for path in ("/v2/models/resnet50/ready", "/v2/models/resnet50/versions/1/ready"):
            r = await client.get(stack.url + path)
            assert r.status_code == 200, (path, r.text)
            assert r.headers["x-served-by"] in pools and r.headers["x-served-model"] == "resnet50"
            assert r.headers["x-model-router-model"] == "resnet50"
            assert r.json() == {"name": "resnet50", "ready": True}
            got = servers[r.headers["x-served-by"]].received[-1]
            assert (got.method, got.path, got.body_len) == ("GET", path, 0)
        for path in ("/v2/models/resnet50", "/v2/models/resnet50/versions/1"):
            r = await client.get(stack.url + path)
            assert r.status_code == 200, (path, r.text)
            assert r.headers["x-served-by"] in pools
            meta = r.json()
            assert meta["name"] == "resnet50" and meta["versions"] == ["1"]
            assert meta["inputs"] and meta["outputs"]
            assert servers[r.headers["x-served-by"]].received[-1].path == path
        url = stack.url + "/v2/models/resnet50/infer"
        for batch, pool in ((64, "resnet50-gpu"), (1, "resnet50-cpu")):
            r = await client.post(url, json=tensor(batch))
            assert r.status_code == 200, r.text
            assert r.headers["x-served-by"] == pool, batch
