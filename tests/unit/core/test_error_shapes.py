"""Each protocol's error shape, and the headers every error response carries."""

from __future__ import annotations

import json

import pytest

from extproc.core import envoy_wire
from extproc.core.error_shapes import encode_header_value, error_document
from extproc.core.errors import InvalidRequest, SpecViolation, UnsupportedMediaType
from extproc.core.protocols import error_protocol


@pytest.mark.parametrize(
    ("path", "protocol"),
    [
        ("/v1/chat/completions", "openai"),
        ("/v1/responses", "openai"),
        ("/v1/models", "openai"),
        ("/v1/models/org/llm", "openai"),
        ("/v1/modelsx", "generic"),
        ("/v1/audio/speech", "generic"),
        ("/v2", "kserve_v2"),
        ("/v2/health/live", "kserve_v2"),
        ("/v2/models/m/infer", "kserve_v2"),
        ("/v2x", "generic"),
        ("/score", "generic"),
    ],
)
def test_error_protocol_follows_the_path(path: str, protocol: str) -> None:
    assert error_protocol(path) == protocol


def test_error_documents() -> None:
    kw = {"status": 422, "type": "spec_violation", "message": "too many", "field": "/n"}
    assert error_document("openai", **kw) == {  # type: ignore[arg-type]
        "error": {"message": "too many", "type": "invalid_request_error", "param": "/n",
                  "code": "spec_violation"}
    }  # fmt: skip
    assert error_document("kserve_v2", **kw) == {"error": "too many"}  # type: ignore[arg-type]
    assert error_document("generic", **kw) == {  # type: ignore[arg-type]
        "error": {"type": "spec_violation", "message": "too many", "field": "/n"}
    }
    # OpenAI's param names the header when the problem is one; 5xx are server errors.
    header = error_document("openai", status=415, type="unsupported_media_type",
                            message="m", header="content-type")  # fmt: skip
    assert header["error"]["param"] == "content-type"
    server = error_document("openai", status=503, type="no_healthy_deployment", message="m")
    assert server["error"]["type"] == "server_error" and server["error"]["param"] is None


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("/messages/0/role", "/messages/0/role"),
        ("/a b", "/a%20b"),
        ("/100%", "/100%25"),
        ("/caf\u00e9", "/caf%C3%A9"),
        ("/tab\there", "/tab%09here"),
        ("/~1x", "/~1x"),
        ("/\U0001f600", "/%F0%9F%98%80"),
    ],
)
def test_field_header_is_percent_encoded(text: str, encoded: str) -> None:
    assert encode_header_value(text) == encoded


def _immediate(err: Exception, protocol: str) -> tuple[int, dict[str, str], object]:
    resp = envoy_wire.immediate(err, protocol)  # type: ignore[arg-type]
    ir = resp.immediate_response
    headers = {h.header.key: h.header.raw_value.decode() for h in ir.headers.set_headers}
    return ir.status.code, headers, json.loads(ir.body)


def test_immediate_responses_carry_type_and_field_headers() -> None:
    err = SpecViolation("n 9 is over 4", field="/n o", rule="json_schema")
    status, headers, body = _immediate(err, "openai")
    assert status == 422
    assert headers["x-model-router-error"] == "spec_violation"
    assert headers["x-model-router-error-field"] == "/n%20o"
    assert body["error"]["param"] == "/n o"  # type: ignore[index]
    _, headers, body = _immediate(UnsupportedMediaType("no", header="content-type"), "kserve_v2")
    assert "x-model-router-error-field" not in headers  # a header is not a body field
    assert body == {"error": "no"}
    _, _, body = _immediate(InvalidRequest("x-model missing", header="x-model"), "generic")
    assert body == {"error": {"type": "invalid_request", "message": "x-model missing",
                              "field": None}}  # fmt: skip
