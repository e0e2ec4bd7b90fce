"""Fault suite, a flood of big bodies: concurrent ~900 KB chat bodies for a bounded time
while small requests for every kind of model keep coming.

Small requests never fail. Closed mode: a big one is a 200 from its own model or a JSON
error (a 429 ``overloaded`` when more large bodies than the router reads at once waited
too long, a 504 ``router_timeout`` if the router could not answer in time), never
anything else. Open mode: what the router does not check continues on the route it first
matched, its own model's (the wrong-model route is gone): every request is served by
its own model, big and small, with no error; skipped then are the router's checks
(protocol, spec, content rules, capabilities) for those big ones, as README says.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

from extproc.dev.model_servers import ModelServer
from tests.integration.conftest import RESNET, StackFactory, routes_for
from tests.integration.load import MAX_CASE_S, Call, Load, outcome
from tests.support import eventually

pytestmark = pytest.mark.integration

BIG = Call(  # the bulk is outside the prompt (chat-large's spec caps prompts at 200k chars)
    "chat-large",
    "/v1/chat/completions",
    {
        "model": "chat-large",
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"pad": "x" * 900_000},
    },
)
SMALL_CALLS = [
    Call("chat-small", "/v1/chat/completions",
         {"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}),
    Call("embed-mini", "/v1/embeddings", {"model": "embed-mini", "input": "x"}),
    Call("resnet50", "/v2/models/resnet50/versions/2/infer", RESNET),
    Call("fraud-xgb", "/score", {}, {"x-model": "fraud-xgb"}),
]  # fmt: skip
FLOOD_CLIENTS = 24
FLOOD_S = 10.0


async def _flood(url: str, counts: Counter[str], until: float) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=60) as c:
        while time.monotonic() < until:
            try:
                r = await c.post(url + BIG.path, json=BIG.body)
            except httpx.HTTPError as exc:
                counts[f"bad:exception:{type(exc).__name__}"] += 1
                continue
            counts[outcome(BIG, r)] += 1


async def _run(stack_url: str) -> tuple[Counter[str], Load]:
    until = time.monotonic() + min(FLOOD_S, MAX_CASE_S)
    big: Counter[str] = Counter()
    small = Load(stack_url, SMALL_CALLS, concurrency=4, max_s=FLOOD_S).start()
    await asyncio.gather(*(_flood(stack_url, big, until) for _ in range(FLOOD_CLIENTS)))
    await small.stop()
    return big, small


@pytest.mark.parametrize("mode", ["closed", "open"])
async def test_big_body_flood(
    mode: str, model_servers: dict[str, ModelServer], make_stack: StackFactory
) -> None:
    stack = await make_stack(routes_for(model_servers), failure_mode=mode)
    large = model_servers["chat-large-v1"]
    large.clear_received(keep=100_000)  # a quiet run of this machine serves over 1,000
    big, small = await _run(stack.url)
    everything = big + small.counts
    assert not [k for k in everything if k.startswith("bad:")], everything  # no wrong model
    assert big["ok"] > 0 and small.ok() > 0, everything
    # Small requests are never the ones that fail: the large-body gate keeps the
    # connection to the router and its event loop for them.
    assert not small.errors(), small.counts
    if mode == "open":  # big ones the gate turned away continue on their own model's route
        assert set(everything) == {"ok"}, everything
    else:  # big ones the gate turned away get a JSON 429 (Retry-After: 1)
        assert set(big) <= {"ok", "json-429-overloaded", "json-504-router_timeout"}, big
    # The big bodies' own model served them all, and no other request.
    served = [r for r in large.received if r.method == "POST"]
    assert len(served) == big["ok"] < large.received.maxlen  # type: ignore[operator]
    assert {r.path for r in served} == {BIG.path}
    # And the router is still there afterwards.
    async with httpx.AsyncClient(trust_env=False) as c:

        async def serves() -> bool:
            r = await c.post(stack.url + SMALL_CALLS[0].path, json=SMALL_CALLS[0].body)
            return r.status_code == 200 and r.headers.get("x-model-router-fail-open") is None

        await eventually(serves, what="the router answers again")
