"""The large-body gate: how many large bodies a worker reads at once, and what the rest get."""

from __future__ import annotations

import asyncio
import json

import pytest

from extproc.core.envoy_wire import processing_messages
from extproc.core.flow import Phase, RequestFlow, RouterState
from extproc.server.pump import LargeBodyGate
from tests.unit.helpers import state_for

CHAT = {"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def state() -> RouterState:
    return state_for()


def _flow_after_headers(state: RouterState, size: int) -> RequestFlow:
    body = json.dumps({**CHAT, "pad": "x" * size}).encode()
    head, _ = processing_messages(
        "POST", "/v1/chat/completions", [("content-type", "application/json")], body
    )
    flow = RequestFlow(state)
    flow.receive(head)
    assert flow.phase is Phase.BODY  # the router now wants the body
    return flow


async def test_small_bodies_pass_large_ones_wait_for_a_slot(state: RouterState) -> None:
    gate = LargeBodyGate(threshold=1000, limit=2, wait_s=0.05, fail_open=False)
    assert not gate.is_large(_flow_after_headers(state, 10))
    assert gate.is_large(_flow_after_headers(state, 5000))
    assert await gate.enter() and await gate.enter()
    assert gate.inside == 2
    assert not await gate.enter()  # full: no slot within wait_s
    assert gate.shed == 1
    gate.leave()
    assert await gate.enter()  # a slot came free


async def test_a_waiting_request_gets_the_slot_that_frees() -> None:
    gate = LargeBodyGate(threshold=1000, limit=1, wait_s=5.0, fail_open=False)
    assert await gate.enter()
    waiting = asyncio.create_task(gate.enter(), name="waiting")
    await asyncio.sleep(0)
    gate.leave()
    assert await waiting and gate.shed == 0


def test_turned_away_closed_is_a_json_429_open_continues_unchecked(state: RouterState) -> None:
    flow = _flow_after_headers(state, 5000)
    resp = LargeBodyGate(1000, 1, 0.0, fail_open=False).turn_away(flow)
    ir = resp.immediate_response
    assert ir.status.code == 429
    headers = {h.header.key: h.header.raw_value.decode() for h in ir.headers.set_headers}
    assert headers["retry-after"] == "1"
    assert headers["x-model-router-error"] == "overloaded" and json.loads(ir.body)["error"]
    flow = _flow_after_headers(state, 5000)
    resp = LargeBodyGate(1000, 1, 0.0, fail_open=True).turn_away(flow)
    assert resp.HasField("request_headers") and resp.HasField("mode_override")
    assert not resp.request_headers.response.header_mutation.set_headers  # no routing
    assert flow.phase is Phase.DONE and flow.outcome.passed
