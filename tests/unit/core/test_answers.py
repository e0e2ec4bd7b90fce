"""What the router answers itself: KServe v2 server health and metadata, model lists."""

from __future__ import annotations

import json

import pytest

from extproc import __version__
from extproc.core.flow import Phase, RouterState
from tests.support import read_error
from tests.unit.helpers import BASIC, run_flow, state_for


def answer(state: RouterState, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    flow, [resp] = run_flow(state, method, path)
    assert resp is not None and resp.HasField("immediate_response")
    assert flow.phase is Phase.DONE
    ir = resp.immediate_response
    headers = {h.header.key: h.header.raw_value.decode() for h in ir.headers.set_headers}
    return ir.status.code, headers, ir.body


def ok(state: RouterState, path: str) -> object:
    flow, [resp] = run_flow(state, "GET", path)
    assert resp is not None
    ir = resp.immediate_response
    assert ir.status.code == 200 and ir.details == "model_router_answer"
    assert flow.outcome.answered is not None and flow.outcome.error is None
    return json.loads(ir.body)


def test_kserve_server_endpoints() -> None:
    state = state_for()
    assert ok(state, "/v2/health/live") == {"live": True}
    assert ok(state, "/v2/health/ready") == {"ready": True}
    meta = ok(state, "/v2")
    assert meta == {"name": "model-router", "version": __version__,
                    "extensions": ["binary_tensor_data", "parameters", "model_configuration",
                                   "statistics", "trace", "generate"]}  # fmt: skip
    assert ok(state, "/v2/models") == {"models": ["resnet50"]}


def test_openai_model_list_and_retrieve() -> None:
    state = state_for(BASIC.replace("protocol: generic", "protocol: openai"))
    listed = ok(state, "/v1/models")
    assert [m["id"] for m in listed["data"]] == ["chat-small", "org/summarizer:latest"]  # type: ignore[index]
    assert ok(state, "/v1/models/org/summarizer:latest") == {
        "id": "org/summarizer:latest", "object": "model", "created": 0, "owned_by": "model-router",
    }  # fmt: skip
    assert ok(state, "/v1/models/org%2Fsummarizer%3Alatest")["id"] == "org/summarizer:latest"  # type: ignore[index]
    status, headers, body = answer(state, "GET", "/v1/models/resnet50")  # not an OpenAI model
    assert status == 404
    assert read_error("/v1/models/resnet50", headers, body)["type"] == "model_not_found"


@pytest.mark.parametrize(
    ("method", "path", "status", "etype"),
    [
        ("POST", "/v1/models", 405, "method_not_allowed"),
        ("DELETE", "/v1/models/chat-small", 405, "method_not_allowed"),
        ("POST", "/v2/health/live", 405, "method_not_allowed"),
        ("POST", "/v2/repository/index", 404, "unsupported_endpoint"),
        ("POST", "/v2/repository/models/resnet50/load", 404, "unsupported_endpoint"),
        ("GET", "/v2/systemsharedmemory/status", 404, "unsupported_endpoint"),
        ("GET", "/v2/models/resnet50/infer", 405, "method_not_allowed"),
        ("GET", "/v2/models/resnet50/generate", 405, "method_not_allowed"),
    ],
)
def test_refused_server_calls(method: str, path: str, status: int, etype: str) -> None:
    got, headers, body = answer(state_for(), method, path)
    err = read_error(path, headers, body)
    assert (got, err["type"]) == (status, etype)
    if path.startswith("/v2/repository"):
        assert "call the model server itself" in err["message"]


def test_ready_needs_a_routable_model_and_a_synced_registry() -> None:
    disabled = BASIC.replace('endpoints: ["127.0.0.1:', 'enabled: false, endpoints: ["127.0.0.1:')
    disabled = disabled.replace('endpoints: ["[::1]', 'enabled: false, endpoints: ["[::1]')
    state = state_for(disabled)
    status, headers, body = answer(state, "GET", "/v2/health/ready")
    assert status == 503
    assert read_error("/v2/health/ready", headers, body)["type"] == "no_healthy_deployment"
    assert ok(state, "/v2/health/live") == {"live": True}
    unsynced = RouterState(None, state.scheduler, state.specs, state.ruleset,
                           state.max_body_bytes, state.max_json_depth)  # fmt: skip
    assert ok(unsynced, "/v2/health/live") == {"live": True}
    assert answer(unsynced, "GET", "/v2/health/ready")[0] == 503
    assert answer(unsynced, "GET", "/v1/models")[0] == 503
