"""What clients send that is too much, through real Envoy: header counts at and past the
limit (JSON 431, never an empty 500), client input echoed only in bounded form, and the
serving endpoint kept from clients by default while Envoy's access log keeps it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from extproc.dev.model_servers import ModelServer
from tests.integration.conftest import RESNET, StackFactory, routes_for
from tests.support import eventually, http_error

pytestmark = pytest.mark.integration

CHAT = {"model": "chat-small", "messages": [{"role": "user", "content": "hello"}]}
CALLS = [
    ("/v1/chat/completions", CHAT),  # through the router, body read
    ("/v2/models/resnet50/versions/2/infer", RESNET),  # through the router, spec checked
]


async def test_header_counts_up_to_and_past_the_limit_get_200_or_json_431(
    model_servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    """Every count from well under to over the limit (100): a 200, or a JSON 431 naming
    the limit, on every path; never Envoy's empty 500 for a request the router's own
    headers would push over it."""
    stack = await make_stack(routes_for(model_servers))
    kserve = model_servers["resnet50-v1"].address
    native = await make_stack(  # no spec: Envoy routes it without the router
        "models: {plain: {protocol: kserve_v2, versions: ['1']}}\n"
        f"deployments: [{{name: p, model: plain, version: '1', endpoints: ['{kserve}']}}]\n"
    )
    calls = [(stack.url, p, b) for p, b in CALLS] + [
        (native.url, "/v2/models/plain/infer", {"inputs": []})
    ]
    seen: dict[str, set[int]] = {}
    for url, path, body in calls:
        for n in range(70, 102):
            headers = {f"x-pad-{i}": "v" for i in range(n)}
            r = await client.post(url + path, json=body, headers=headers)
            seen.setdefault(path, set()).add(r.status_code)
            assert r.status_code in (200, 431), (path, n, r.status_code, r.text)
            if r.status_code == 431:
                assert r.headers["content-type"] == "application/json"
                doc = r.json()
                if isinstance(doc["error"], dict) and "field" in doc["error"]:
                    # Envoy's codec refused the headers before it parsed the path: its
                    # local reply cannot know the protocol, so it takes the generic shape.
                    error = doc["error"]
                    assert r.headers["x-model-router-error"] == error["type"], r.text
                else:
                    error = http_error(r)
                assert error["type"] == "request_headers_too_large", r.text
                assert "100" in error["message"]
    assert len(seen) == 3 and all(codes == {200, 431} for codes in seen.values()), seen


def _router_lines(log: Path, request_id: str) -> list[str]:
    return [ln for ln in log.read_text().splitlines() if request_id in ln]


async def test_client_input_is_echoed_bounded_in_errors_and_logs(
    model_servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    stack = await make_stack(routes_for(model_servers))
    big = "x" * 50_000
    cases = [
        ({"x-model-capabilities": big, "x-request-id": "big-caps"}, CHAT, 400),
        ({"content-type": "application/" + big, "x-request-id": "big-type"}, CHAT, 415),
        ({"x-request-id": "big-model"}, {**CHAT, "model": big}, 404),
    ]
    for headers, body, status in cases:
        r = await client.post(
            stack.url + "/v1/chat/completions",
            content=json.dumps(body).encode(),
            headers={"content-type": "application/json", **headers},
        )
        assert r.status_code == status, r.text[:300]
        assert len(r.content) < 2048, (status, len(r.content))
        assert "more characters" in http_error(r)["message"]
        rid = headers["x-request-id"]
        lines = await eventually(
            lambda rid=rid: _router_lines(stack.workdir / "router.log", rid), what=f"{rid} logged"
        )
        assert all(len(line) < 4096 for line in lines), [len(line) for line in lines]


async def test_the_endpoint_is_not_disclosed_by_default_and_envoy_logs_it(
    model_servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    stack = await make_stack(routes_for(model_servers), disclose_endpoint=False)
    served: dict[str, str] = {}
    for i, (path, body) in enumerate(
        [("/v1/chat/completions", CHAT), ("/v2/models/resnet50/versions/2/infer", RESNET)]
    ):
        rid = f"disclose-{i}"
        r = await client.post(stack.url + path, json=body, headers={"x-request-id": rid})
        assert r.status_code == 200
        assert "x-model-router-endpoint" not in r.headers
        by = r.headers["x-served-by"]
        served[rid] = model_servers[by].address

    def logged() -> bool:
        entries = [json.loads(ln) for ln in (stack.workdir / "envoy.log").read_text().splitlines()
                   if ln.startswith("{")]  # fmt: skip
        hosts = {e.get("request_id"): e.get("upstream_host") for e in entries}
        assert all(hosts.get(rid) == addr for rid, addr in served.items()), (hosts, served)
        return True

    await eventually(logged, what="Envoy's access log has each request's upstream host")
