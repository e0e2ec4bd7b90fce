"""Every corpus case through real Envoy and through `model-router explain`; hostile input
in bulk leaves the router healthy."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from extproc.dev.model_servers import ModelServer
from extproc.ops.stack import Stack
from tests.corpus import Case, load_cases
from tests.support import http_error

pytestmark = pytest.mark.integration

CASES = load_cases()


async def send(client: httpx.AsyncClient, url: str, case: Case) -> httpx.Response:
    headers = dict(case.headers)
    content: bytes | AsyncIterator[bytes] = case.body
    if headers.get("transfer-encoding", "").lower() == "chunked":
        headers.pop("transfer-encoding")
        body = case.body

        async def chunks() -> AsyncIterator[bytes]:
            step = max(1, len(body) // 4)
            for i in range(0, len(body), step):
                yield body[i : i + step]

        content = chunks()
    return await client.request(case.method, url + case.path, headers=headers, content=content)


async def test_every_corpus_case_through_envoy(
    corpus_stack: Stack, client: httpx.AsyncClient, model_servers: dict[str, ModelServer]
) -> None:
    assert CASES
    for case in CASES:
        r = await send(client, corpus_stack.url, case)
        expect = case.expect
        if case.routable:
            assert r.status_code == 200, (case.id, r.status_code, r.text)
            assert r.headers["x-served-model"] == expect["model"], case.id
            if expect["version"] is not None:
                assert r.headers["x-served-version"] == expect["version"], case.id
            upstream = model_servers[r.headers["x-served-by"]].received[-1]
            sent = case.body
            if case.headers.get("content-encoding") == "gzip":
                sent = gzip.decompress(sent)  # the test server (aiohttp) inflates what it reads
            assert upstream.body_len == len(sent), case.id  # bytes forwarded untouched
        else:
            assert r.status_code == expect["status"], (case.id, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/json"), case.id
            err = http_error(r)
            assert err["field"] == expect["field"], (case.id, err)
            assert "x-served-by" not in r.headers, case.id


def test_every_corpus_case_through_explain(tmp_path: Path) -> None:
    from tests.corpus import corpus_routes

    routes = tmp_path / "routes.yaml"
    routes.write_text(corpus_routes({}))
    for case in CASES:
        body = tmp_path / "body"
        body.write_bytes(case.body)
        argv = [sys.executable, "-m", "extproc", "explain", "--config", str(routes),
                "--path", case.path, "--method", case.method, "--request", str(body)]  # fmt: skip
        for k, v in case.headers.items():
            argv += ["--header", f"{k}={v}"]
        out = json.loads(subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout)
        expect = case.expect
        assert out.get("outcome") == expect["outcome"], (case.id, out)
        if case.routable:
            assert out["request"]["model"] == expect["model"], case.id
            assert out["request"]["version"] == expect["version"], case.id
            assert out["request"]["protocol"] == expect["protocol"], case.id
        else:
            assert out["status"] == expect["status"], (case.id, out)
            assert out["error"]["field"] == expect["field"], (case.id, out)


def _hostile(rng: random.Random) -> tuple[str, dict[str, str], bytes]:
    paths = ["/v1/chat/completions", "/v1/embeddings", "/v2/models/resnet50/infer",
             "/v2/models/fraud-xgb/versions/3/infer", "/x"]  # fmt: skip
    kind = rng.randrange(8)
    headers = {"content-type": "application/json"}
    if kind == 0:
        body = os.urandom(rng.randrange(1, 4096))
    elif kind == 1:
        body = b"[" * rng.randrange(100, 20000)
    elif kind == 2:
        body = (
            b'{"model": "chat-small", "messages": [{"role": "user", "content": "'
            + b"\\ud800" * 50
            + b'"}]}'
        )
    elif kind == 3:
        body = b'{"model": "chat-small", "temperature": 1e99999, "messages": []}'
    elif kind == 4:
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                       "shape": [1, 3, 2, 2], "data": [1.0] * rng.randrange(20)}]}).encode()  # fmt: skip
    elif kind == 5:
        headers["content-encoding"] = "gzip"
        body = os.urandom(100)
    elif kind == 6:
        headers["content-type"] = rng.choice(
            ["text/plain", "application/json; charset=latin-1", ""]
        )
        body = b"{}"
    else:
        body = b'{"model": "chat-small", "model": "chat-large", "messages": [{"role": "user", "content": "x"}]}'
    return rng.choice(paths), headers, body


async def test_hostile_batch_leaves_router_healthy(
    corpus_stack: Stack, client: httpx.AsyncClient
) -> None:
    from grpc_health.v1 import health_pb2

    from extproc.ops.procs import grpc_health

    rng = random.Random(1234)
    statuses: dict[int, int] = {}

    async def one() -> None:
        path, headers, body = _hostile(rng)
        r = await client.post(corpus_stack.url + path, headers=headers, content=body)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert 400 <= r.status_code < 500, (path, headers, body[:100], r.status_code, r.text)
        err = http_error(r)
        assert err["type"] and err["message"]

    for _ in range(10):
        await asyncio.gather(*(one() for _ in range(30)))
    assert sum(statuses.values()) == 300
    cfg = corpus_stack.config
    addr = f"{cfg.listener.host}:{cfg.listener.port}"
    assert await grpc_health(addr, "readiness") == health_pb2.HealthCheckResponse.SERVING
    ok = await client.post(
        corpus_stack.url + "/v1/chat/completions",
        json={"model": "chat-small", "messages": [{"role": "user", "content": "still there?"}]},
    )
    assert ok.status_code == 200
    metrics = (
        await client.get(f"http://{cfg.listener.host}:{cfg.listener.metrics_port}/metrics")
    ).text
    assert "model_router_internal_errors_total 0.0" in metrics
    assert corpus_stack.router is not None and corpus_stack.router.running
