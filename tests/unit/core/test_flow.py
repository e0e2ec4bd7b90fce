from __future__ import annotations

import gzip
import json

import pytest
from envoy.config.core.v3 import base_pb2 as core
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import struct_pb2

from extproc.core.envoy_wire import (
    DESTINATION_HEADER,
    LB_NAMESPACE,
    SUBSET_KEY,
    SUBSET_NAMESPACE,
    processing_messages,
)
from extproc.core.flow import Phase, RequestFlow
from tests.support import ROOT, read_error
from tests.unit.helpers import run_flow, set_headers, state_for

JSON = [("content-type", "application/json")]
CHAT_PATH = "/v1/chat/completions"
CHAT = json.dumps({"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}).encode()


def error_of(resp: ep.ProcessingResponse, path: str) -> tuple[int, dict[str, object]]:
    """Status and the error (type, message, field) read in ``path``'s protocol shape."""
    assert resp.HasField("immediate_response")
    ir = resp.immediate_response
    hdrs = {h.header.key: h.header.raw_value.decode() for h in ir.headers.set_headers}
    assert hdrs["content-type"] == "application/json"
    return ir.status.code, read_error(path, hdrs, ir.body)


def test_kserve_path_routes_on_headers_and_skips_body() -> None:
    flow, [resp] = run_flow(
        state_for(), "POST", "/v2/models/resnet50/infer", JSON, b'{"inputs": []}'
    )
    assert resp is not None and resp.HasField("request_headers")
    assert resp.HasField("mode_override")
    assert resp.mode_override.request_body_mode == pm.ProcessingMode.NONE
    hdrs = set_headers(resp)
    assert hdrs[DESTINATION_HEADER] == "127.0.0.1:8101"
    assert hdrs["x-model-router-model"] == "resnet50"
    assert hdrs["x-model-router-version"] == "1"  # v2 is disabled
    assert hdrs["x-model-router-deployment"] == "rn1"
    assert hdrs["x-model-router-cluster"] == "deployment.rn1"  # the picked route's cluster
    opts = resp.request_headers.response.header_mutation.set_headers
    assert all(o.append_action == core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD for o in opts)
    assert resp.request_headers.response.clear_route_cache
    md = resp.dynamic_metadata.fields[LB_NAMESPACE].struct_value.fields[DESTINATION_HEADER]
    assert md.string_value == "127.0.0.1:8101"
    assert flow.phase is Phase.DONE and not flow.outcome.used_body


def test_openai_needs_body_then_routes_with_fallbacks() -> None:
    state = state_for()
    flow, [first, second] = run_flow(state, "POST", "/v1/chat/completions", JSON, CHAT)
    assert first is not None and first.HasField("request_headers")
    assert not first.request_headers.response.HasField("header_mutation")
    assert second is not None and second.HasField("request_body")
    hdrs = set_headers(second)
    md = second.dynamic_metadata.fields[LB_NAMESPACE].struct_value.fields[DESTINATION_HEADER]
    endpoints = md.string_value.split(",")
    # metadata: primary plus ordered fallbacks, all distinct, all serving chat-small
    assert len(endpoints) == 3 and len(set(endpoints)) == 3
    assert set(endpoints) == {"127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"}
    # header: the same list (endpoint picker protocol: header and metadata agree); the
    # cluster's override_host policy takes the first and walks the rest on retry
    assert hdrs[DESTINATION_HEADER] == md.string_value
    assert hdrs["x-model-router-cluster"] == "deployment." + hdrs["x-model-router-deployment"]
    assert flow.outcome.used_body and flow.outcome.body_bytes == len(CHAT)


def test_round_robin_spreads_over_endpoints() -> None:
    state = state_for()
    seen = []
    for _ in range(6):
        _, resps = run_flow(state, "POST", "/v1/chat/completions", JSON, CHAT)
        seen.append(set_headers(resps[-1])[DESTINATION_HEADER].split(",")[0])
    assert seen.count("127.0.0.1:8001") == 2
    assert seen.count("127.0.0.1:8002") == 2
    assert seen.count("127.0.0.1:8003") == 2


def test_version_header_and_capabilities_filter() -> None:
    state = state_for()
    _, resps = run_flow(
        state, "POST", "/v1/chat/completions", [*JSON, ("x-model-version", "1")], CHAT
    )
    assert set_headers(resps[-1])["x-model-router-deployment"] == "cs1"
    _, resps = run_flow(
        state,
        "POST",
        "/v1/chat/completions",
        [*JSON, ("x-model-capabilities", "accelerator=a100")],
        CHAT,
    )
    assert set_headers(resps[-1])["x-model-router-deployment"] == "cs2"
    _, resps = run_flow(
        state,
        "POST",
        "/v1/chat/completions",
        [*JSON, ("x-model-capabilities", "accelerator=h100")],
        CHAT,
    )
    status, err = error_of(resps[-1], CHAT_PATH)  # type: ignore[arg-type]
    assert status == 503 and err["type"] == "no_healthy_deployment"
    assert "accelerator" in str(err["message"])


def test_generic_x_model_with_odd_characters() -> None:
    state = state_for()
    _, [resp] = run_flow(
        state, "POST", "/api/summarize", [*JSON, ("x-model", "org/summarizer:latest")], b"{}"
    )
    assert resp is not None
    assert set_headers(resp)[DESTINATION_HEADER] == "[::1]:8201"


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "etype", "field"),
    [
        ("POST", "/v2/models/nope/infer", JSON, b"{}", 404, "model_not_found", None),
        ("POST", "/v2/models/resnet50/versions/9/infer", JSON, b"{}", 404, "version_not_found", None),
        ("POST", "/v2/models/resnet50/versions/2/infer", JSON, b"{}", 503, "no_healthy_deployment", None),
        ("POST", "/v1/chat/completions", JSON, b'{"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}', 404, "model_not_found", "/model"),
        ("POST", "/v1/chat/completions", JSON, b'{"messages": []}', 400, "invalid_request", "/model"),
        ("POST", "/v1/chat/completions", JSON, b'{"model": 7}', 400, "invalid_request", "/model"),
        ("POST", "/v1/chat/completions", JSON, b"{not json", 400, "invalid_body", None),
        ("POST", "/v1/chat/completions", JSON, b"[1, 2]", 400, "invalid_body", None),
        ("POST", "/v1/chat/completions", JSON, b"\xff\xfe{}", 400, "invalid_body", None),
        ("POST", "/v1/chat/completions", JSON, None, 400, "invalid_body", None),
        ("POST", "/v1/chat/completions", [("content-type", "text/plain")], b"{}", 415,
         "unsupported_media_type", None),
        ("GET", "/v1/chat/completions", JSON, None, 405, "method_not_allowed", None),
        ("POST", "/api/other", JSON, b"{}", 400, "invalid_request", None),
        ("POST", "/v1/chat/completions", [*JSON, ("x-model-capabilities", "oops")], CHAT, 400,
         "invalid_request", None),
    ],
)  # fmt: skip
def test_errors_map_to_documented_status_and_json(
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
    status: int,
    etype: str,
    field: str | None,
) -> None:
    flow, resps = run_flow(state_for(), method, path, headers, body)
    got_status, err = error_of(resps[-1], path)  # type: ignore[arg-type]
    assert (got_status, err["type"], err["field"]) == (status, etype, field)
    assert flow.phase is Phase.DONE and flow.outcome.error is not None


def test_content_length_over_limit_is_413_before_buffering() -> None:
    state = state_for()
    flow = RequestFlow(state)
    limit = state.max_body_bytes
    msg = ep.ProcessingRequest(
        request_headers=ep.HttpHeaders(
            headers=core.HeaderMap(
                headers=[
                    core.HeaderValue(key=k, raw_value=v.encode())
                    for k, v in [
                        (":method", "POST"),
                        (":path", "/v1/chat/completions"),
                        ("content-type", "application/json"),
                        ("content-length", str(limit + 1)),
                    ]
                ]
            )
        )
    )
    status, err = error_of(flow.receive(msg), CHAT_PATH)  # type: ignore[arg-type]
    assert status == 413 and err["type"] == "body_too_large"


def test_streamed_chunks_accumulate_and_are_bounded() -> None:
    state = state_for()
    flow = RequestFlow(state)
    head = processing_messages("POST", "/v1/chat/completions", JSON, b"x")[0]
    head.request_headers.end_of_stream = False
    assert flow.receive(head) is not None
    for i, part in enumerate([CHAT[:10], CHAT[10:20], CHAT[20:]]):
        resp = flow.receive(
            ep.ProcessingRequest(request_body=ep.HttpBody(body=part, end_of_stream=i == 2))
        )
        if i < 2:
            assert resp is None
    assert resp is not None and set_headers(resp)["x-model-router-model"] == "chat-small"
    # Chunks past the limit give a 413 without holding the body.
    flow = RequestFlow(state)
    flow.receive(head)
    chunk = b"x" * (state.max_body_bytes // 2 + 1)
    assert flow.receive(ep.ProcessingRequest(request_body=ep.HttpBody(body=chunk))) is None
    status, _ = error_of(
        flow.receive(ep.ProcessingRequest(request_body=ep.HttpBody(body=chunk))), CHAT_PATH
    )  # type: ignore[arg-type]
    assert status == 413


def test_gzip_body_is_inflated_with_a_bound() -> None:
    state = state_for()
    gz = [*JSON, ("content-encoding", "gzip")]
    _, resps = run_flow(state, "POST", "/v1/chat/completions", gz, gzip.compress(CHAT))
    assert set_headers(resps[-1])["x-model-router-model"] == "chat-small"
    bomb = gzip.compress(b'{"model": "' + b"a" * (state.max_body_bytes * 2) + b'"}')
    _, resps = run_flow(state, "POST", "/v1/chat/completions", gz, bomb)
    status, _ = error_of(resps[-1], CHAT_PATH)  # type: ignore[arg-type]
    assert status == 413
    _, resps = run_flow(state, "POST", "/v1/chat/completions", gz, b"not gzip")
    status, _ = error_of(resps[-1], CHAT_PATH)  # type: ignore[arg-type]
    assert status == 400


def _with_subset(addrs: list[str]) -> ep.ProcessingRequest:
    msg = processing_messages("POST", "/v2/models/resnet50/infer", JSON, None)[0]
    st = struct_pb2.Struct()
    st.update({SUBSET_KEY: addrs})
    msg.metadata_context.filter_metadata[SUBSET_NAMESPACE].CopyFrom(st)
    return msg


def test_subset_hint_is_honoured() -> None:
    state = state_for()
    resp = RequestFlow(state).receive(_with_subset(["127.0.0.1:8101", "10.0.0.9:1"]))
    assert resp is not None and set_headers(resp)[DESTINATION_HEADER] == "127.0.0.1:8101"
    status, err = error_of(
        RequestFlow(state).receive(_with_subset(["10.0.0.9:1"])), "/v2/models/resnet50/infer"
    )  # type: ignore[arg-type]
    assert status == 503 and "subset" in str(err["message"])


def test_unexpected_messages_pass_through() -> None:
    state = state_for()
    flow, _ = run_flow(state, "POST", "/v2/models/resnet50/infer", JSON, None)
    resp = flow.receive(ep.ProcessingRequest(request_trailers=ep.HttpTrailers()))
    assert resp is not None and resp.HasField("request_trailers")
    resp = flow.receive(ep.ProcessingRequest(response_headers=ep.HttpHeaders()))
    assert resp is not None and resp.HasField("response_headers")


def test_client_routing_header_does_not_influence_decision() -> None:
    state = state_for()
    _, [resp] = run_flow(
        state,
        "POST",
        "/v2/models/resnet50/infer",
        [*JSON, (DESTINATION_HEADER, "6.6.6.6:80"), ("x-model-router-deployment", "evil")],
        None,
    )
    assert resp is not None
    hdrs = set_headers(resp)
    assert hdrs[DESTINATION_HEADER] == "127.0.0.1:8101"
    assert hdrs["x-model-router-deployment"] == "rn1"


def test_kserve_ready_and_metadata_gets_skip_the_body_under_body_reading_rules() -> None:
    """Regression: with rules that read KServe infer bodies (``examples/rules-batch.yaml``),
    ``GET .../ready`` and the metadata GET answered 400 invalid_body: the flow asked for a
    body these calls never have. They route on headers to the model's servers."""
    state = state_for((ROOT / "examples" / "rules-batch.yaml").read_text())
    assert state.snapshot is not None
    resnet50 = {
        e.address for d in state.snapshot.models["resnet50"].deployments for e in d.endpoints
    }
    for path in (
        "/v2/models/resnet50/ready",
        "/v2/models/resnet50/versions/1/ready",
        "/v2/models/resnet50",
        "/v2/models/resnet50/versions/1",
    ):
        flow, [resp] = run_flow(state, "GET", path)
        assert flow.outcome.error is None, (path, flow.outcome.error)
        assert flow.phase is Phase.DONE and not flow.outcome.used_body, path
        assert resp is not None and resp.HasField("request_headers"), path
        assert resp.mode_override.request_body_mode == pm.ProcessingMode.NONE
        hdrs = set_headers(resp)
        assert hdrs[DESTINATION_HEADER].split(",")[0] in resnet50, (path, hdrs)
        assert hdrs["x-model-router-model"] == "resnet50"
        assert hdrs["x-model-router-version"] == "1"
    # The same routing file still reads infer bodies: the batch size picks the pool.
    for batch, pool in ((64, "resnet50-gpu"), (1, "resnet50-cpu")):
        body = {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [batch, 1], "data": [0.0] * batch}
            ]
        }
        flow, resps = run_flow(
            state, "POST", "/v2/models/resnet50/infer", JSON, json.dumps(body).encode()
        )
        assert flow.outcome.used_body
        assert set_headers(resps[-1])["x-model-router-deployment"] == pool


def test_headers_that_leave_no_room_for_the_routers_get_a_431() -> None:
    """Envoy refuses a mutation past its header limit with an empty 500; the router
    answers 431 itself when its own headers would not fit."""
    from extproc.core.envoy_wire import ROUTER_HEADER_ROOM

    state = state_for()
    limit = state.max_request_headers
    sent = processing_messages("POST", "/v2/models/resnet50/infer", JSON, b"{}")[0]
    base = len(sent.request_headers.headers.headers)
    fits = [(f"x-pad-{i}", "v") for i in range(limit - ROUTER_HEADER_ROOM - base)]
    _, [ok] = run_flow(state, "POST", "/v2/models/resnet50/infer", [*JSON, *fits], b"{}")
    assert ok is not None and ok.HasField("request_headers")
    over = [*fits, ("x-pad-last", "v")]
    _, [resp] = run_flow(state, "POST", "/v2/models/resnet50/infer", [*JSON, *over], b"{}")
    assert resp is not None
    status, error = error_of(resp, "/v2/models/resnet50/infer")
    assert status == 431 and error["type"] == "request_headers_too_large"
    assert f"limit of {limit}" in str(error["message"])


def test_client_input_in_an_error_is_bounded() -> None:
    huge = "m" * 50_000
    body = json.dumps({"model": huge, "messages": [{"role": "user", "content": "hi"}]}).encode()
    _, out = run_flow(state_for(), "POST", "/v1/chat/completions", JSON, body)
    resp = out[-1]
    assert resp is not None
    status, error = error_of(resp, "/v1/chat/completions")
    assert status == 404
    message = str(error["message"])
    assert len(message) < 300 and "(49936 more characters)" in message
