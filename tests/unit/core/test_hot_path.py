"""The request path's shortcuts give the same responses as the plain path."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2 as core
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from extproc.core.envoy_wire import ResponseCache, route_on_body, route_on_headers
from extproc.core.flow import parse_head
from extproc.core.request import RequestHead
from extproc.core.rewrite import Rewrite
from tests.unit.helpers import run_flow, set_headers, state_for

JSON = [("content-type", "application/json")]


def _headers(*pairs: tuple[str, bytes | str]) -> ep.HttpHeaders:
    values = []
    for key, value in pairs:
        if isinstance(value, bytes):
            values.append(core.HeaderValue(key=key, raw_value=value))
        else:
            values.append(core.HeaderValue(key=key, value=value))
    return ep.HttpHeaders(headers=core.HeaderMap(headers=values))


def test_parse_head_common_case() -> None:
    head = parse_head(_headers((":method", b"POST"), (":path", b"/v1/x?a=1"), ("x-a", b"1")))
    assert head.method == "POST" and head.path == "/v1/x?a=1" and head.path_only == "/v1/x"
    assert dict(head.headers) == {":method": "POST", ":path": "/v1/x?a=1", "x-a": "1"}


def test_parse_head_repeats_case_value_fields_and_bad_utf8() -> None:
    head = parse_head(
        _headers(
            (":path", b"/p"),
            ("X-Tenant", b"a"),  # upper case (synthesized heads; Envoy sends lower case)
            ("x-tenant", b"b"),  # a repeat: joined with a comma
            ("x-old", "from-value"),  # ``value`` instead of ``raw_value``
            ("x-bin", b"\xff"),  # invalid UTF-8: replaced, not an error
        )
    )
    assert head.headers["x-tenant"] == "a,b"
    assert head.headers["x-old"] == "from-value"
    assert head.headers["x-bin"] == "\ufffd"
    assert head.method == "" and head.path_only == "/p"


def test_request_head_path_only_is_computed_once_and_not_compared() -> None:
    a = RequestHead("GET", "/v2/models/m?x=1", {})
    assert a.path_only == "/v2/models/m"
    assert a == RequestHead("GET", "/v2/models/m?x=1", {})


def test_answers_reuse_per_decision_and_rebuild_rewrites() -> None:
    state = state_for()
    flow, [first] = run_flow(state, "POST", "/v2/models/resnet50/infer", JSON, b"{}")
    _, [second] = run_flow(state, "POST", "/v2/models/resnet50/infer", JSON, b"{}")
    assert first is second  # one routable endpoint: the same answer object
    decision = flow.outcome.decision
    assert decision is not None
    assert state.responses.on_headers(decision) is first
    assert first == route_on_headers(decision)
    assert state.responses.on_body(decision) == route_on_body(decision)
    rewrite = Rewrite(set_headers=(("x-extra", "1"),))
    rewritten = state.responses.on_headers(decision, rewrite)
    assert rewritten is not state.responses.on_headers(decision, rewrite)
    assert set_headers(rewritten)["x-extra"] == "1"
    assert "x-extra" not in set_headers(first)


def test_answers_cache_is_bounded() -> None:
    state = state_for()
    responses = ResponseCache(limit=2)
    seen = []
    for _ in range(6):  # chat-small rotates over 3 endpoint orders
        flow, _ = run_flow(state, "POST", "/v1/chat/completions", JSON, _chat())
        assert flow.outcome.decision is not None
        seen.append(responses.on_body(flow.outcome.decision))
        assert len(responses._body) <= 2
    assert seen[0] == seen[3] and seen[0] != seen[1]
    assert "body=" in repr(responses)


def _chat() -> bytes:
    return b'{"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}'


def test_decision_reason_is_built_from_its_parts() -> None:
    state = state_for()
    flow, _ = run_flow(
        state,
        "POST",
        "/v1/chat/completions",
        [*JSON, ("x-model-capabilities", "accelerator=a100")],
        _chat(),
    )
    d = flow.outcome.decision
    assert d is not None and d.requested_version is None and d.within_subset is False
    assert d.reason == (
        "round_robin over 2 endpoint(s) of model 'chat-small' version any with accelerator=a100"
    )
    flow, _ = run_flow(state, "POST", "/v2/models/resnet50/versions/1/infer", JSON, None)
    d = flow.outcome.decision
    assert d is not None
    assert d.reason == "round_robin over 1 endpoint(s) of model 'resnet50' version 1"
