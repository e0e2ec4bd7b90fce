"""KServe v2 / Triton paths: the model name and version around the operation suffixes,
and what a KServe infer call may send (no content type, deflate)."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from extproc.core.errors import BodyTooLarge, InvalidBody, RouterError
from extproc.core.protocols import InferenceRequest, RequestHead, understand_head
from extproc.core.protocols.json_body import inflate, plain_body
from extproc.core.protocols.kserve_v2 import match, reserved_suffix


@pytest.mark.parametrize(
    ("path", "name", "version", "op"),
    [
        ("/v2/models/fraud-xgb", "fraud-xgb", None, None),
        ("/v2/models/fraud-xgb/config", "fraud-xgb", None, "/config"),
        ("/v2/models/fraud-xgb/stats", "fraud-xgb", None, "/stats"),
        ("/v2/models/fraud-xgb/versions/3/ready", "fraud-xgb", "3", "/ready"),
        ("/v2/models/fraud-xgb/versions/3/trace/setting", "fraud-xgb", "3", "/trace/setting"),
        ("/v2/models/llm/generate", "llm", None, "/generate"),
        ("/v2/models/llm/generate_stream", "llm", None, "/generate_stream"),
        ("/v2/models/org/team/model/infer", "org/team/model", None, "/infer"),
        ("/v2/models/org/model/versions/2", "org/model", "2", None),
        ("/v2/models/org/model:v1.2/versions/2/config", "org/model:v1.2", "2", "/config"),
    ],
)
def test_path_splits_name_version_and_operation(
    path: str, name: str, version: str | None, op: str | None
) -> None:
    m = match(path)
    assert m is not None
    assert tuple(m) == (name, version, op)


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("fraud/config", "/config"),
        ("a/b/ready", "/ready"),
        ("llm/generate_stream", "/generate_stream"),
        ("x/trace/setting", "/trace/setting"),
        ("a/versions/2", "/versions/2"),
        ("fraud-xgb", None),
        ("org/model", None),
        ("configs/model", None),
        ("org/infer-v2", None),
    ],
)
def test_reserved_suffixes(name: str, suffix: str | None) -> None:
    assert reserved_suffix(name) == suffix


def head(headers: dict[str, str], path: str = "/v2/models/m/infer") -> RequestHead:
    return RequestHead("POST", path, headers)


@pytest.mark.parametrize(
    "headers",
    [
        {},  # tritonclient's default: read as JSON
        {"inference-header-content-length": "40"},  # the binary extension
        {"content-type": "application/octet-stream", "inference-header-content-length": "4"},
        {"content-encoding": "deflate"},
        {"content-encoding": "GZIP", "content-type": "application/json; charset=utf-8"},
    ],
)
def test_kserve_infer_accepts_what_triton_accepts(headers: dict[str, str]) -> None:
    assert isinstance(understand_head(head(headers)), InferenceRequest)


@pytest.mark.parametrize(
    ("path", "headers", "header"),
    [
        ("/v2/models/m/infer", {"content-type": "application/octet-stream"}, "content-type"),
        ("/v2/models/m/infer", {"content-encoding": "br"}, "content-encoding"),
        ("/v1/chat/completions", {}, "content-type"),
        ("/v1/chat/completions", {"content-type": "application/json",
                                  "content-encoding": "deflate"}, "content-encoding"),
    ],
)  # fmt: skip
def test_media_type_errors_name_the_header(path: str, headers: dict[str, str], header: str) -> None:
    with pytest.raises(RouterError) as info:
        understand_head(head(headers, path))
    assert (info.value.status, info.value.header, info.value.field) == (415, header, None)


BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]})


@pytest.mark.parametrize(
    ("coding", "data"),
    [
        ("deflate", zlib.compress(BODY.encode())),  # RFC 9110: zlib data
        ("deflate", zlib.compress(BODY.encode())[2:-4]),  # raw deflate, as some clients send
        ("gzip", gzip.compress(BODY.encode())),
    ],
)
def test_compressed_bodies_are_inflated(coding: str, data: bytes) -> None:
    h = head({"content-encoding": coding})
    assert plain_body(h, data, 1 << 20) == BODY.encode()


def test_deflate_bombs_and_garbage() -> None:
    bomb = zlib.compress(b"0" * 100_000)
    with pytest.raises(BodyTooLarge):
        inflate(bomb, 1000, "deflate")
    with pytest.raises(InvalidBody, match="not valid deflate data"):
        inflate(b"\x78\x9c not deflate", 1000, "deflate")
    with pytest.raises(InvalidBody, match="truncated"):
        inflate(zlib.compress(BODY.encode())[:-6], 1000, "deflate")
