"""Per-model timeouts through real Envoy: a hung model server costs its clients the model's
first-byte timeout (a JSON 504), not the long total timeout streamed generations need."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from extproc.dev.hung_server import HungServer
from extproc.dev.model_servers import ModelServer, ModelServerSpec
from tests.integration.conftest import StackFactory, running
from tests.support import http_error

pytestmark = pytest.mark.integration


@pytest.fixture
async def hung() -> AsyncIterator[HungServer]:
    server = HungServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _routes(hung: HungServer, slow: ModelServer) -> str:
    no_hc = "health_check: {enabled: false}"
    return (
        "models:\n"
        # KServe: routed natively by Envoy; OpenAI: through the router (picked route).
        "  stuck-k: {protocol: kserve_v2, versions: ['1'], timeouts: {first_byte_s: 1}}\n"
        "  stuck-chat: {protocol: openai, versions: ['1'], timeouts: {first_byte_s: 1}}\n"
        "  slow-chat: {protocol: openai, versions: ['1'], timeouts: {first_byte_s: 1}}\n"
        "deployments:\n"
        f"  - {{name: hk, model: stuck-k, version: '1', endpoints: ['{hung.address}'], {no_hc}}}\n"
        f"  - {{name: hc, model: stuck-chat, version: '1', endpoints: ['{hung.address}'],"
        f" {no_hc}}}\n"
        f"  - {{name: sc, model: slow-chat, version: '1', endpoints: ['{slow.address}']}}\n"
    )


async def test_hung_backend_gets_a_json_504_and_streams_outlive_the_first_byte_timeout(
    hung: HungServer, make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    # Streams for about 3 s (6 chunks, 0.6 s apart): longer than its 1 s first-byte timeout.
    spec = ModelServerSpec("slow", "openai", "slow-chat", "1", stream_delay_s=0.6, stream_chunks=6)
    async with running([spec]) as servers:
        stack = await make_stack(_routes(hung, servers["slow"]))
        calls = [
            ("/v2/models/stuck-k/infer", {"inputs": []}),
            ("/v1/chat/completions", {"model": "stuck-chat", "messages": [
                {"role": "user", "content": "hi"}]}),
        ]  # fmt: skip
        for path, body in calls:
            r = await client.post(stack.url + path, json=body)
            assert r.status_code == 504, (path, r.status_code, r.text)
            assert r.headers["content-type"] == "application/json"
            assert http_error(r)["type"] == "upstream_timeout", r.text
        assert hung.accepted >= 2  # the requests reached the hung server
        # The response headers came at once, so the first-byte timeout is met and the
        # stream runs to its end, past it (the total timeout is 600 s).
        chunks = []
        async with client.stream(
            "POST",
            stack.url + "/v1/chat/completions",
            json={"model": "slow-chat", "stream": True,
                  "messages": [{"role": "user", "content": "hi"}]},
        ) as r:  # fmt: skip
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    chunks.append(line)
        assert chunks[-1] == "data: [DONE]" and len(chunks) == 7, chunks
