"""Integration tests for extproc.dev.model_servers: real aiohttp servers and httpx clients on loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from extproc.dev.model_servers import ModelServer, ModelServerSpec, run_servers, serve_forever
from tests.support import eventually

pytestmark = pytest.mark.integration

OPENAI = ModelServerSpec(name="chat-small-v1-a", kind="openai", model="chat-small", version="v1")
KSERVE = ModelServerSpec(
    name="resnet-v3-a",
    kind="kserve_v2",
    model="resnet",
    version="3",
    metadata={"inputs": [{"name": "img", "datatype": "UINT8", "shape": [-1, 224, 224, 3]}]},
)


def _client(server: ModelServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=10.0)


def _assert_tagged(resp: httpx.Response, spec: ModelServerSpec) -> None:
    assert resp.headers["x-served-by"] == spec.name
    assert resp.headers["x-served-model"] == spec.model
    assert resp.headers["x-served-version"] == spec.version


@pytest.fixture
async def openai_server() -> AsyncIterator[ModelServer]:
    async with ModelServer(OPENAI) as server:
        yield server


@pytest.fixture
async def kserve_server() -> AsyncIterator[ModelServer]:
    async with ModelServer(KSERVE) as server:
        yield server


async def test_lifecycle_and_repr() -> None:
    server = ModelServer(OPENAI)
    assert not server.running and server.count == 0
    with pytest.raises(RuntimeError):
        _ = server.port
    assert "not-started" in repr(server)
    await server.start()
    try:
        assert server.port > 0
        assert server.address == f"127.0.0.1:{server.port}"
        with pytest.raises(RuntimeError):
            await server.start()
        async with _client(server) as client:
            assert (await client.get("/health", headers={"user-agent": "Envoy/HC"})).is_success
            assert (await client.get("/v1/models")).status_code == 200
        text = repr(server)
        for part in ("chat-small-v1-a", "openai", "chat-small", "v1", server.address, "served=1",
                     "health_checks=1"):  # fmt: skip
            assert part in text
    finally:
        await server.stop()
    await server.stop()  # idempotent
    assert not server.running
    async with httpx.AsyncClient(trust_env=False) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://{server.address}/health")


async def test_chat_completion(openai_server: ModelServer) -> None:
    async with _client(openai_server) as client:
        resp = await client.post(
            "/v1/chat/completions",
            json={"model": "chat-small-2024", "messages": [{"role": "user", "content": "hi"}]},
        )
        default = await client.post("/v1/chat/completions", json={"messages": []})
    assert resp.status_code == 200
    _assert_tagged(resp, OPENAI)
    body = resp.json()
    assert body["object"] == "chat.completion"
    assert body["id"] and isinstance(body["created"], int)
    assert body["model"] == "chat-small-2024"
    message = body["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "hello from chat-small-v1-a"}
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert default.json()["model"] == "chat-small"


async def test_chat_stream_is_incremental(openai_server: ModelServer) -> None:
    arrivals: list[tuple[float, str]] = []
    buffer = ""
    async with (
        _client(openai_server) as client,
        client.stream(
            "POST", "/v1/chat/completions", json={"model": "m", "stream": True, "messages": []}
        ) as resp,
    ):
        assert resp.status_code == 200
        _assert_tagged(resp, OPENAI)
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for chunk in resp.aiter_text():
            now = time.monotonic()
            buffer += chunk
            while "\n\n" in buffer:
                event, buffer = buffer.split("\n\n", 1)
                arrivals.append((now, event))
    assert buffer == ""
    assert arrivals[-1][1] == "data: [DONE]"
    data_events = [(t, e) for t, e in arrivals[:-1]]
    assert len(data_events) >= 5
    chunks = [json.loads(e.removeprefix("data: ")) for _, e in data_events]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "m" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks)
    assert text == "hello from chat-small-v1-a"
    # Not buffered: events arrive spread out in time (5 events, 4 gaps of ~50 ms).
    assert data_events[-1][0] - data_events[0][0] >= 0.1
    assert len({t for t, _ in data_events}) >= 4


async def test_stream_usage_option(openai_server: ModelServer) -> None:
    body = {"stream": True, "stream_options": {"include_usage": True}, "messages": []}
    async with _client(openai_server) as client:
        resp = await client.post("/v1/chat/completions", json=body)
    events = [e for e in resp.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    usage_chunk = json.loads(events[-2].removeprefix("data: "))
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0


async def test_other_openai_endpoints(openai_server: ModelServer) -> None:
    async with _client(openai_server) as client:
        comp = await client.post("/v1/completions", json={"model": "c", "prompt": "x"})
        emb = await client.post("/v1/embeddings", json={"model": "e", "input": ["a", "b"]})
        generic = await client.post("/predict/anything", json={"model": "x-model"})
        generic_raw = await client.post("/foo", content=b"\x00\x01")
        models = await client.get("/v1/models")
        missing = await client.get("/nope")
        bad = await client.post("/v1/chat/completions", content=b"{not json")
    for resp in (comp, emb, generic, generic_raw, models, missing, bad):
        _assert_tagged(resp, OPENAI)
    assert comp.json()["object"] == "text_completion"
    assert comp.json()["choices"][0]["text"] == "hello from chat-small-v1-a"
    emb_body = emb.json()
    assert emb_body["model"] == "e" and len(emb_body["data"]) == 2
    vector = emb_body["data"][0]["embedding"]
    assert len(vector) >= 4 and all(isinstance(v, float) for v in vector)
    assert generic.json() == {
        "served_by": "chat-small-v1-a",
        "model": "x-model",
        "path": "/predict/anything",
    }
    assert generic_raw.json()["model"] == "chat-small"
    assert models.json()["data"][0]["id"] == "chat-small"
    assert missing.status_code == 405  # catch-all route is POST only
    assert bad.status_code == 400 and "error" in bad.json()


async def test_health_switch(openai_server: ModelServer, kserve_server: ModelServer) -> None:
    async with _client(openai_server) as oc, _client(kserve_server) as kc:
        assert (await oc.get("/health")).json() == {"status": "ok"}
        for path in ("/health", "/v2/health/ready", "/v2/health/live"):
            assert (await kc.get(path)).status_code == 200
        openai_server.set_healthy(False)
        kserve_server.set_healthy(False)
        resp = await oc.get("/health")
        assert resp.status_code == 503
        _assert_tagged(resp, OPENAI)
        for path in ("/health", "/v2/health/ready", "/v2/health/live"):
            assert (await kc.get(path)).status_code == 503
        openai_server.set_healthy(True)
        assert (await oc.get("/health")).status_code == 200


async def test_large_body_and_received(openai_server: ModelServer) -> None:
    prompt = "x" * (3 * 1024 * 1024)
    payload = json.dumps({"model": "big", "messages": [{"role": "user", "content": prompt}]})
    async with _client(openai_server) as client:
        resp = await client.post(
            "/v1/chat/completions?trace=1",
            content=payload.encode(),
            headers={"Content-Type": "application/json", "X-Test-Header": "Hello"},
        )
    assert resp.status_code == 200
    assert resp.json()["model"] == "big"
    assert openai_server.count == 1 and len(openai_server.received) == 1
    rec = openai_server.received[-1]
    assert rec.method == "POST" and rec.path == "/v1/chat/completions" and rec.query == "trace=1"
    assert rec.body_len == len(payload)
    assert rec.headers["x-test-header"] == "Hello"
    assert rec.headers["content-type"] == "application/json"
    assert all(k == k.lower() for k in rec.headers)


async def test_received_is_bounded(openai_server: ModelServer) -> None:
    async with _client(openai_server) as client:
        for batch in (100,) * 10 + (10,):  # batched: httpx's pool times out on huge gathers
            await asyncio.gather(*(client.get("/v1/models") for _ in range(batch)))
    assert openai_server.count == 1010
    assert len(openai_server.received) == 1000
    openai_server.clear_received()
    assert openai_server.count == 0 and not openai_server.received


async def test_health_probes_are_counted_apart_from_the_traffic(
    openai_server: ModelServer, kserve_server: ModelServer
) -> None:
    # Envoy health-checks every deployment each second: what a test sent through the
    # router must not share `received` (and its bound) or `count` with those probes.
    cases = [
        (openai_server, ["/health"], "/v1/models"),
        (kserve_server, ["/v2/health/ready", "/v2/health/live"],
         f"/v2/models/{kserve_server.spec.model}"),
    ]  # fmt: skip
    probe = {"user-agent": "Envoy/HC"}  # what Envoy's HTTP health checker sends
    for server, probes, traffic in cases:
        async with _client(server) as client:
            for path in probes:
                assert (await client.get(path, headers=probe)).status_code == 200, path
            assert (await client.get(traffic)).status_code == 200
            assert (await client.get(probes[0])).status_code == 200  # a client's: traffic
        assert server.health_checks == len(probes)
        assert server.count == 2 and [r.path for r in server.received] == [traffic, probes[0]]


async def test_kserve_metadata(kserve_server: ModelServer) -> None:
    async with _client(kserve_server) as client:
        meta = await client.get("/v2/models/resnet")
        versioned = await client.get("/v2/models/resnet/versions/3")
    _assert_tagged(meta, KSERVE)
    body = meta.json()
    assert body["name"] == "resnet" and body["versions"] == ["3"]
    assert body["platform"] == "devserver"
    assert body["inputs"][0]["name"] == "img"
    assert body["outputs"][0]["name"] == "out"
    assert versioned.json() == body


async def test_kserve_model_ready(kserve_server: ModelServer) -> None:
    """Open Inference Protocol model ready: a GET, 200 while ready (KServe's body)."""
    async with _client(kserve_server) as client:
        ready = await client.get("/v2/models/resnet/ready")
        versioned = await client.get("/v2/models/resnet/versions/3/ready")
        kserve_server.set_healthy(False)
        not_ready = await client.get("/v2/models/resnet/ready")
        not_ready_versioned = await client.get("/v2/models/resnet/versions/3/ready")
    for resp in (ready, versioned, not_ready, not_ready_versioned):
        _assert_tagged(resp, KSERVE)
    assert ready.status_code == 200 and ready.json() == {"name": "resnet", "ready": True}
    assert versioned.status_code == 200 and versioned.json() == ready.json()
    assert not_ready.status_code == 503 and not_ready.json() == {"name": "resnet", "ready": False}
    assert not_ready_versioned.status_code == 503
    assert [(r.method, r.path, r.body_len) for r in kserve_server.received] == [
        ("GET", "/v2/models/resnet/ready", 0),
        ("GET", "/v2/models/resnet/versions/3/ready", 0),
        ("GET", "/v2/models/resnet/ready", 0),
        ("GET", "/v2/models/resnet/versions/3/ready", 0),
    ]


async def test_kserve_infer_json_and_binary(kserve_server: ModelServer) -> None:
    header = json.dumps({"id": "req-42", "inputs": [{"name": "img", "datatype": "UINT8"}]})
    binary = header.encode() + bytes(range(256)) * 4
    async with _client(kserve_server) as client:
        plain = await client.post(
            "/v2/models/resnet/infer", json={"id": "abc", "inputs": [{"name": "img"}]}
        )
        no_id = await client.post("/v2/models/resnet/versions/3/infer", json={"inputs": []})
        bin_resp = await client.post(
            "/v2/models/resnet/versions/3/infer",
            content=binary,
            headers={
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            },
        )
        raw = await client.post(
            "/v2/models/resnet/infer",
            content=b"\xff\xfe",
            headers={"Content-Type": "application/octet-stream"},
        )
        bad = await client.post("/v2/models/resnet/infer", content=b"{oops")
        generic = await client.post("/predict", json={})
    _assert_tagged(plain, KSERVE)
    body = plain.json()
    assert body["model_name"] == "resnet" and body["model_version"] == "3"
    assert body["id"] == "abc"
    assert body["outputs"] == [{"name": "out", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}]
    assert "id" not in no_id.json()
    assert bin_resp.status_code == 200 and bin_resp.json()["id"] == "req-42"
    assert kserve_server.received[-4].body_len == len(binary)
    assert raw.status_code == 200 and "id" not in raw.json()
    assert bad.status_code == 400
    # Other POST paths are generic JSON APIs (routed by x-model) and answered too.
    assert generic.status_code == 200 and generic.json()["served_by"] == KSERVE.name


async def test_kserve_strict_names() -> None:
    spec = ModelServerSpec(name="s", kind="kserve_v2", model="m", version="1", strict=True)
    async with ModelServer(spec) as server, _client(server) as client:
        assert (await client.get("/v2/models/m")).status_code == 200
        assert (await client.get("/v2/models/m/versions/1")).status_code == 200
        assert (await client.get("/v2/models/other")).status_code == 404
        assert (await client.get("/v2/models/m/ready")).status_code == 200
        assert (await client.get("/v2/models/m/versions/1/ready")).status_code == 200
        assert (await client.get("/v2/models/other/ready")).status_code == 404
        assert (await client.get("/v2/models/m/versions/2/ready")).status_code == 404
        assert (await client.post("/v2/models/m/versions/2/infer", json={})).status_code == 404


async def test_run_servers_and_serve_forever(capsys: pytest.CaptureFixture[str]) -> None:
    servers = await run_servers([OPENAI, KSERVE])
    try:
        assert [s.spec.name for s in servers] == [OPENAI.name, KSERVE.name]
        assert all(s.running for s in servers)
    finally:
        for s in servers:
            await s.stop()

    task = asyncio.create_task(serve_forever([OPENAI, KSERVE]))
    try:
        lines: list[str] = []

        def two_lines_printed() -> bool:
            lines.extend(capsys.readouterr().out.splitlines())
            return len(lines) >= 2

        await eventually(two_lines_printed, interval=0.02)
        assert len(lines) == 2
        name, kind, model, version, address = lines[1].split()
        assert (name, kind, model, version) == ("resnet-v3-a", "kserve_v2", "resnet", "3")
        async with httpx.AsyncClient(trust_env=False) as client:
            assert (await client.get(f"http://{address}/v2/health/ready")).status_code == 200
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    async with httpx.AsyncClient(trust_env=False) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://{address}/health")


async def test_fixed_port_conflict_is_reported() -> None:
    async with ModelServer(OPENAI) as first:
        spec = ModelServerSpec(name="dup", kind="openai", model="m", version="1", port=first.port)
        with pytest.raises(OSError):
            await run_servers([KSERVE, spec])
