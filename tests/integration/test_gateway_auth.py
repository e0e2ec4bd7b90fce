"""The gateway through a real Envoy: API keys before routing on the ext_proc path and on
the native fast path (Envoy's ext_authz to the router), 401/403/429 in each path's
protocol shape, and a decoy model server that no unauthenticated request reaches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml

from extproc.control.gateway.keys import entry_for, new_key
from extproc.dev.model_servers import ModelServer, ModelServerSpec
from extproc.ops.stack import Stack
from tests.integration.conftest import StackFactory, running
from tests.support import eventually, http_error

pytestmark = pytest.mark.integration

SPECS = [
    ModelServerSpec("chat", "openai", "chat", "1"),
    ModelServerSpec("tensor", "kserve_v2", "tensor", "1"),
    ModelServerSpec("decoy", "openai", "decoy", "1"),
]
TENSOR = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}]}


def chat(model: str = "chat") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hello there"}],
            "max_tokens": 8}  # fmt: skip


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, ModelServer]]:
    async with running(SPECS) as started:
        yield started


def write_keys(path: Path, entries: list[dict[str, object]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"keys": entries}))
    tmp.replace(path)  # the router never reads a half-written file


def gateway_routes(s: dict[str, ModelServer], keys: Path, extra: str = "") -> str:
    return f"""
auth: {{keys_file: "{keys}"}}
tenants:
  acme: {{models: [chat, tensor], default_class: standard}}
  tiny: {{quotas: {{requests_per_minute: 3}}}}
  single: {{quotas: {{concurrent_requests: 1}}}}
{extra}
""" + fleet(s)


def fleet(s: dict[str, ModelServer]) -> str:
    """The models and deployments of :data:`SPECS` (chat, tensor, the decoy)."""
    return f"""
models:
  chat: {{protocol: openai, versions: ["1"]}}
  tensor: {{protocol: kserve_v2, versions: ["1"]}}
  decoy: {{protocol: openai, versions: ["1"]}}
deployments:
  - {{name: chat, model: chat, version: "1", endpoints: ["{s["chat"].address}"]}}
  - {{name: tensor, model: tensor, version: "1", endpoints: ["{s["tensor"].address}"]}}
  - {{name: decoy, model: decoy, version: "1", endpoints: ["{s["decoy"].address}"]}}
"""


def served(server: ModelServer) -> list[str]:  # Envoy's health probes are counted apart
    return [r.path for r in server.received]


@pytest.fixture
async def keyed(
    servers: dict[str, ModelServer], make_stack: StackFactory, tmp_path: Path
) -> tuple[Stack, dict[str, str], dict[str, ModelServer]]:
    keys = {"acme": new_key(), "tiny": new_key(), "narrow": new_key(), "single": new_key()}
    path = tmp_path / "keys.yaml"
    write_keys(path, [
        entry_for(keys["acme"], name="acme-ci", tenant="acme"),
        entry_for(keys["tiny"], name="tiny-1", tenant="tiny"),
        entry_for(keys["single"], name="single", tenant="single"),
        {**entry_for(keys["narrow"], name="narrow", tenant="acme"), "models": ["tensor"]},
    ])  # fmt: skip
    stack = await make_stack(gateway_routes(servers, path))
    return stack, keys, servers


async def test_no_or_bad_credentials_get_401_on_both_paths_and_reach_no_server(
    keyed: tuple[Stack, dict[str, str], dict[str, ModelServer]], client: httpx.AsyncClient
) -> None:
    stack, keys, servers = keyed
    url = stack.url
    cases = [
        ("/v1/chat/completions", chat(), {}),  # ext_proc path
        ("/v1/chat/completions", chat("decoy"), {}),
        ("/v2/models/tensor/infer", TENSOR, {}),  # native path (ext_authz)
        ("/v2/models/decoy/infer", TENSOR, {}),  # unknown to KServe routes: ext_proc
        ("/anything", {"x": 1}, {"x-model": "decoy"}),
    ]
    bad = [{}, {"authorization": "Bearer mr-not-a-key"}, {"x-api-key": "nope"},
           {"authorization": "Basic dXNlcjpwYXNz"}, {"authorization": "Bearer"}]  # fmt: skip
    for path, body, headers in cases:
        for creds in bad:
            r = await client.post(url + path, json=body, headers={**headers, **creds})
            assert r.status_code == 401, (path, creds, r.status_code, r.text)
            err = http_error(r)
            assert err["type"] == "unauthenticated", err
            challenge = r.headers["www-authenticate"]
            assert challenge.startswith('Bearer realm="model-router"'), challenge
            assert ('error="invalid_token"' in challenge) == bool(creds), (creds, challenge)
    assert served(servers["decoy"]) == []
    assert served(servers["chat"]) == [] and served(servers["tensor"]) == []
    # No key material in the logs (the keys are random: any occurrence would be a leak).
    logs = (stack.workdir / "router.log").read_text() + (stack.workdir / "envoy.log").read_text()
    for key in keys.values():
        assert key not in logs
    assert "mr-not-a-key" not in logs


async def test_valid_keys_route_on_both_paths_without_forwarding_them(
    keyed: tuple[Stack, dict[str, str], dict[str, ModelServer]], client: httpx.AsyncClient
) -> None:
    stack, keys, servers = keyed
    for creds in ({"authorization": f"Bearer {keys['acme']}"}, {"x-api-key": keys["acme"]}):
        r = await client.post(stack.url + "/v1/chat/completions", json=chat(), headers=creds)
        assert r.status_code == 200, r.text
        assert r.headers["x-served-by"] == "chat"
        r = await client.post(stack.url + "/v2/models/tensor/infer", json=TENSOR, headers=creds)
        assert r.status_code == 200, r.text
        assert r.headers["x-served-by"] == "tensor"
        assert "x-model-router-fail-open" not in r.headers
    for server in (servers["chat"], servers["tensor"]):
        for received in server.received:
            assert "authorization" not in received.headers
            assert "x-api-key" not in received.headers
    # Health probes need no credentials.
    r = await client.get(stack.url + "/v2/health/ready")
    assert r.status_code == 200, r.text


async def test_a_model_the_key_may_not_use_is_403_on_both_paths(
    keyed: tuple[Stack, dict[str, str], dict[str, ModelServer]], client: httpx.AsyncClient
) -> None:
    stack, keys, servers = keyed
    narrow = {"authorization": f"Bearer {keys['narrow']}"}
    acme = {"x-api-key": keys["acme"]}
    for path, body, creds in [
        ("/v1/chat/completions", chat(), narrow),  # key narrows acme to tensor
        ("/v1/chat/completions", chat("decoy"), acme),  # tenant acme: chat, tensor
        ("/anything", {"x": 1}, {**acme, "x-model": "decoy"}),
    ]:
        r = await client.post(stack.url + path, json=body, headers=creds)
        assert r.status_code == 403, (path, r.text)
        err = http_error(r)
        assert err["type"] == "model_not_allowed"
        assert "decoy" in err["message"] or "chat" in err["message"]
    r = await client.post(stack.url + "/v2/models/tensor/infer", json=TENSOR, headers=narrow)
    assert r.status_code == 200, r.text
    assert served(servers["decoy"]) == []


async def test_over_quota_is_429_with_openai_headers_on_both_paths(
    keyed: tuple[Stack, dict[str, str], dict[str, ModelServer]], client: httpx.AsyncClient
) -> None:
    stack, keys, _ = keyed
    tiny = {"x-api-key": keys["tiny"]}
    calls = [("/v1/chat/completions", chat()), ("/v2/models/tensor/infer", TENSOR)]
    statuses = []
    for i in range(6):
        path, body = calls[i % 2]
        r = await client.post(stack.url + path, json=body, headers=tiny)
        statuses.append(r.status_code)
        if r.status_code == 429:
            err = http_error(r)
            assert err["type"] == "rate_limit_exceeded", err
            h = r.headers
            assert h["x-ratelimit-limit-requests"] == "3"
            assert h["x-ratelimit-remaining-requests"] == "0"
            assert h["x-ratelimit-reset-requests"].endswith("s")
            assert 1 <= int(h["retry-after"]) <= 60
            assert h["x-model-router-quota"] == "requests_per_minute"
    # One minute window: 3 of the first requests pass, the rest are refused; a window
    # boundary in between lets more through (counted, not timed).
    assert statuses.count(200) >= 3 and set(statuses) <= {200, 429}, statuses
    assert statuses[:3] == [200, 200, 200] or statuses.count(200) > 3, statuses

    async def counted() -> bool:
        r = await client.get(f"http://127.0.0.1:{stack.config.listener.metrics_port}/metrics")
        text = r.text
        assert (
            'model_router_gateway_requests_total{path="ext_proc",result="allowed",tenant="tiny"}'
            in text
        )
        assert (
            'model_router_gateway_requests_total{path="native",result="allowed",tenant="tiny"}'
            in text
        )
        return True

    await eventually(counted)


async def test_key_rotation_under_load_loses_no_request(
    keyed: tuple[Stack, dict[str, str], dict[str, ModelServer]],
    client: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    """Add the new key, move the clients to it, drop the old one, with a broken keys
    file written in between: every request with a key valid at the time is served."""
    stack, keys, _ = keyed
    path = tmp_path / "keys.yaml"
    old, new = keys["acme"], new_key()
    current = {"key": old}
    seen: dict[str, int] = {}
    stop = asyncio.Event()
    deadline = time.monotonic() + 60  # the load is bounded even if a step hangs
    calls = [("/v1/chat/completions", chat()), ("/v2/models/tensor/infer", TENSOR)]

    async def loop(n: int) -> None:
        i = n
        while not stop.is_set() and time.monotonic() < deadline:
            path_, body = calls[i % 2]
            i += 1
            r = await client.post(stack.url + path_, json=body,
                                  headers={"x-api-key": current["key"]})  # fmt: skip
            seen[str(r.status_code)] = seen.get(str(r.status_code), 0) + 1
            assert r.status_code == 200, (path_, r.status_code, r.text)

    async def works(key: str, want: int) -> bool:
        r = await client.post(stack.url + "/v2/models/tensor/infer", json=TENSOR,
                              headers={"x-api-key": key})  # fmt: skip
        return r.status_code == want

    entries = [entry_for(old, name="acme-ci", tenant="acme")]
    tasks = [asyncio.create_task(loop(n), name=f"rotation-load-{n}") for n in range(4)]
    try:
        await eventually(lambda: seen.get("200", 0) >= 20, what="load running")
        write_keys(path, [*entries, entry_for(new, name="acme-ci-2", tenant="acme")])
        await eventually(lambda: works(new, 200), what="new key accepted")
        current["key"] = new
        path.write_text("keys: [this is {not yaml")  # a broken file keeps the last good
        await eventually(lambda: reload_errors(client, stack), what="broken file refused")
        before = seen["200"]
        await eventually(lambda: seen["200"] >= before + 20, what="served on the last good")
        write_keys(path, [entry_for(new, name="acme-ci-2", tenant="acme")])
        await eventually(lambda: works(old, 401), what="old key refused")
        before = seen["200"]
        await eventually(lambda: seen["200"] >= before + 20, what="served after rotation")
    finally:
        stop.set()
        await asyncio.gather(*tasks)  # an assertion in a loop fails the test here
    assert set(seen) == {"200"}, seen


async def reload_errors(client: httpx.AsyncClient, stack: Stack) -> bool:
    port = stack.config.listener.metrics_port
    text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return 'model_router_config_reloads_total{result="error"}' in text


async def test_a_concurrency_slot_returns_when_the_request_ends_on_both_paths(
    keyed: tuple[Stack, dict[str, str], dict[str, ModelServer]], client: httpx.AsyncClient
) -> None:
    """One request in flight at a time: each ended request's access-log entry returns
    its slot (on native routes through the worker that ext_authz tagged), so one caller
    sending one request after another is never refused for long."""
    stack, keys, _ = keyed
    single = {"x-api-key": keys["single"]}
    calls = [("/v1/chat/completions", chat()), ("/v2/models/tensor/infer", TENSOR)]
    refused: list[str] = []
    for i in range(8):
        path, body = calls[i % 2]

        async def served_now(path: str = path, body: object = body) -> bool:
            r = await client.post(stack.url + path, json=body, headers=single)
            if r.status_code == 429:  # the previous request's entry is not in yet (~20 ms)
                assert r.headers["x-model-router-quota"] == "concurrent_requests", r.text
                refused.append(path)
                return False
            assert r.status_code == 200, r.text
            return True

        await eventually(served_now, what=f"request {i} ({path}) admitted")
