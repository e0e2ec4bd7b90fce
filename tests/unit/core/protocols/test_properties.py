"""Property tests: hostile bodies and headers through decoding, protocol and spec checks.

Whatever arrives, the outcome is a routed request or a :class:`RouterError` with
a client status (400/413/415/422), a JSON-serialisable message and ``field``
either ``None`` or a JSON Pointer; never another exception, never a hang.
"""

from __future__ import annotations

import gzip
import json
import re
import struct
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from extproc.control.compile.specs import parse_specs
from extproc.core.errors import RouterError
from extproc.core.protocols import (
    InferenceRequest,
    NeedsBody,
    RequestHead,
    kserve_v2,
    understand_body,
    understand_head,
    with_kserve_body,
)
from extproc.core.specs.check import CompiledSpec
from tests.corpus import SAMPLES
from tests.unit.strategies import SETTINGS, json_values

ALLOWED = {400, 413, 415, 422}
_TOKEN = re.compile(r"(?:[^~]|~[01])*")

PATHS = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v2/models/resnet50/infer",
    "/v2/models/fraud-xgb/versions/3/infer",
    "/api/generic",
]


@pytest.fixture(scope="module")
def compiled() -> dict[str, CompiledSpec]:
    if not (SAMPLES / "specs.json").exists():
        pytest.skip("sample corpus not found")
    return parse_specs(json.loads((SAMPLES / "specs.json").read_text()))


def outcome(
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    specs: Mapping[str, CompiledSpec],
    *,
    limit: int = 1_048_576,
    max_depth: int = 64,
) -> InferenceRequest | RouterError:
    """The pipeline's order; a model without a spec is simply not spec-checked (no 404s here)."""
    head = RequestHead("POST", path, {k.lower(): v for k, v in headers.items()})
    try:
        understood = understand_head(head)
        if len(body) > limit:
            return RouterError("too big")  # the flow's 413, not under test here
        if isinstance(understood, NeedsBody):
            request = understand_body(head, understood, body, limit, max_depth=max_depth)
        else:
            request = understood
            m = kserve_v2.match(head.path_only)
            if m is not None and kserve_v2.is_infer(m):
                request = with_kserve_body(request, body, limit, max_depth=max_depth)
        spec = specs.get(request.model)
        if spec is not None:
            spec.check(request.body, request.protocol, head.path_only)
        return request
    except RouterError as err:
        return err


def assert_clean(result: InferenceRequest | RouterError) -> None:
    event("routed" if isinstance(result, InferenceRequest) else f"{result.status} {result.type}")
    if isinstance(result, InferenceRequest):
        return
    if type(result) is RouterError:  # the stand-in for the flow's size check
        return
    assert result.status in ALLOWED, repr(result)
    assert isinstance(result.message, str) and result.message
    orjson.dumps({"error": {"type": result.type, "message": result.message, "field": result.field}})
    if result.field is not None:
        assert isinstance(result.field, str) and result.field.startswith("/"), result.field
        assert all(_TOKEN.fullmatch(t) for t in result.field[1:].split("/")), result.field


def resolve_parent(doc: Any, pointer: str) -> bool:
    """The value holding ``pointer``'s last token exists in ``doc``."""
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]
    node = doc
    for t in tokens[:-1]:
        if isinstance(node, dict) and t in node:
            node = node[t]
        elif isinstance(node, list) and t.isdigit() and int(t) < len(node):
            node = node[int(t)]
        else:
            return False
    return isinstance(node, dict | list)


# --------------------------------------------------------------------------- strategies

content_types = st.sampled_from(
    [
        "application/json",
        "application/json",
        "application/json",
        "application/json",
        "Application/JSON; charset=UTF-8",
        "application/json; charset=latin-1",
        "application/octet-stream",
        "text/plain",
        "",
        "application/json;;;=",
        "multipart/form-data; boundary=x",
    ]
)
encodings = st.sampled_from([None, "identity", "gzip", "GZIP", "br", "deflate", " gzip "])


@st.composite
def headers(draw: st.DrawFn) -> dict[str, str]:
    h = {"content-type": draw(content_types)}
    enc = draw(encodings)
    if enc is not None:
        h["content-encoding"] = enc
    if draw(st.booleans()):
        h["x-model"] = draw(st.sampled_from(["chat-small", "resnet50", "", "x/y"]))
    if draw(st.integers(0, 4)) == 0:
        h["inference-header-content-length"] = draw(
            st.sampled_from(["0", "1", "12", "-1", "abc", "999999", "٣"])
        )
    return h


def maybe_gzip(h: Mapping[str, str], body: bytes, truncate: bool) -> bytes:
    if h.get("content-encoding", "").strip().lower() == "gzip":
        z = gzip.compress(body)
        return z[: len(z) // 2] if truncate else z
    return body


def mostly(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """``good`` nine times in ten: enough valid structure to reach the deeper checks."""
    return draw(good if draw(st.integers(0, 9)) else bad)


@st.composite
def openai_bodies(draw: st.DrawFn) -> dict[str, Any]:
    roles = ["system", "developer", "user", "assistant", "tool"]
    part = st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image_url"])},
        optional={"text": st.text(max_size=20), "image_url": json_values},
    )
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(roles), "tool_call_id": st.text(max_size=5)},
        optional={"content": st.none() | st.text(max_size=400) | st.lists(part, max_size=3)},
    )
    bad_message = st.fixed_dictionaries(
        {},
        optional={
            "role": st.sampled_from(["narrator", "User"]) | json_values,
            "content": json_values | st.lists(json_values, max_size=2),
            "tool_call_id": json_values,
        },
    )
    tokens = st.lists(st.integers(0, 2**40), max_size=5)
    text_or_tokens = (
        st.text(max_size=40)
        | st.lists(st.text(max_size=10), max_size=4)
        | tokens
        | st.lists(tokens, max_size=3)
    )
    body = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "max_tokens": st.integers(-5, 10_000) | json_values,
                "max_completion_tokens": st.integers(0, 3000),
                "temperature": st.floats(-1, 5) | json_values,
                "n": st.integers(-1, 10),
                "stop": json_values,
                "logprobs": st.booleans(),
                "response_format": json_values,
                "tools": st.lists(json_values, max_size=10),
                "dimensions": st.integers(-1, 1000),
            },
        )
    )
    if draw(st.integers(0, 9)):
        body["model"] = mostly(
            draw, st.sampled_from(["chat-small", "chat-large", "embed-mini", "other"]), json_values
        )
    if draw(st.integers(0, 9)):
        body["messages"] = mostly(
            draw,
            st.lists(message, min_size=1, max_size=20),
            st.lists(bad_message, max_size=3) | json_values,
        )
    for name in ("prompt", "input"):
        if draw(st.booleans()):
            body[name] = mostly(
                draw, text_or_tokens, json_values | st.lists(json_values, max_size=3)
            )
    return body


datatypes = st.sampled_from([*kserve_v2.DATATYPES, "FLOAT", 5])


@st.composite
def kserve_bodies(draw: st.DrawFn) -> tuple[dict[str, Any], bytes | None]:
    n = draw(st.integers(0, 3))
    inputs = []
    blobs = []
    binary = draw(st.booleans())
    for i in range(n):
        shape = draw(st.lists(st.integers(-1, 4), max_size=4) | json_values)
        t: dict[str, Any] = {
            "name": draw(
                st.sampled_from(["input", "features", "merchant_category", "country", f"t{i}"])
            ),
            "datatype": draw(datatypes),
            "shape": shape,
        }
        count = 1
        for d in shape if isinstance(shape, list) else []:
            count *= d if isinstance(d, int) and d > 0 else 1
        count = min(count, 300)  # a shape too big for its data is just another mismatch
        if binary and draw(st.booleans()):
            size = draw(st.sampled_from([count * 4, count * 8, count, 0, 3]))
            t["parameters"] = {"binary_data_size": size}
            blobs.append(
                draw(st.binary(min_size=size, max_size=size))
                if draw(st.booleans())
                else b"\x01" * size
            )
        else:
            t["data"] = draw(
                st.lists(
                    st.floats(allow_nan=False) | st.integers() | st.booleans(),
                    min_size=count,
                    max_size=count,
                )
                | json_values
            )
        inputs.append(t)
    body: dict[str, Any] = (
        {"inputs": inputs} if draw(st.integers(0, 9)) else {"inputs": draw(json_values)}
    )
    if draw(st.booleans()):
        body["outputs"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["logits", "label", "zzz"]) | json_values}
                ),
                max_size=3,
            )
        )
    tail = b"".join(blobs) + draw(st.sampled_from([b"", b"", b"\x00"]))
    return body, (tail if binary else None)


# --------------------------------------------------------------------------- properties


@SETTINGS
@given(path=st.sampled_from(PATHS), h=headers(), body=st.binary(max_size=2000))
def test_random_bytes(
    compiled: dict[str, CompiledSpec], path: str, h: dict[str, str], body: bytes
) -> None:
    assert_clean(outcome(path, h, body, compiled))


@SETTINGS
@given(path=st.sampled_from(PATHS), h=headers(), value=json_values, trunc=st.booleans())
def test_random_json_values(
    compiled: dict[str, CompiledSpec], path: str, h: dict[str, str], value: Any, trunc: bool
) -> None:
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    assert_clean(outcome(path, h, maybe_gzip(h, raw, trunc), compiled))


@SETTINGS
@given(
    path=st.sampled_from(PATHS[:3]), body=openai_bodies(), dup=st.booleans(), ascii_=st.booleans()
)
def test_structured_openai_bodies(
    compiled: dict[str, CompiledSpec], path: str, body: dict[str, Any], dup: bool, ascii_: bool
) -> None:
    raw = json.dumps(body, ensure_ascii=ascii_).encode("utf-8", "surrogatepass")
    if dup and body:
        key = json.dumps(next(iter(body)), ensure_ascii=ascii_).encode("utf-8", "surrogatepass")
        raw = raw[:-1] + (b", " if len(body) else b"") + key + b": 1}"
    result = outcome(path, {"content-type": "application/json"}, raw, compiled)
    assert_clean(result)
    if isinstance(result, RouterError) and result.status in (400, 422) and result.field and not dup:
        assert resolve_parent(body, result.field), (result, body)
    if dup and body and isinstance(result, RouterError) and result.type == "invalid_body":
        assert result.field is not None


@SETTINGS
@given(
    path=st.sampled_from(PATHS[3:5]), kb=kserve_bodies(), gz=st.booleans(), off=st.integers(-3, 3)
)
def test_structured_kserve_bodies(
    compiled: dict[str, CompiledSpec],
    path: str,
    kb: tuple[dict[str, Any], bytes | None],
    gz: bool,
    off: int,
) -> None:
    body, tail = kb
    raw = json.dumps(body).encode("utf-8", "surrogatepass")
    h = {"content-type": "application/json"}
    if tail is not None:
        h = {
            "content-type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(raw) + off),
        }
        raw += tail
    if gz:
        h["content-encoding"] = "gzip"
        raw = gzip.compress(raw)
    result = outcome(path, h, raw, compiled)
    assert_clean(result)
    if isinstance(result, RouterError) and result.field and tail is None and not gz:
        assert resolve_parent(body, result.field), (result, body)


@SETTINGS
@given(
    depth=st.integers(1, 3000),
    opener=st.sampled_from([b"[", b'{"a":']),
    number=st.sampled_from([b"1", b"1e999999", b"-" + b"9" * 400, b"NaN", b"1e-999999"]),
    text_len=st.integers(0, 200_000),
)
def test_deep_and_huge(
    compiled: dict[str, CompiledSpec], depth: int, opener: bytes, number: bytes, text_len: int
) -> None:
    closer = b"]" if opener == b"[" else b"}"
    inner = opener * depth + number + closer * depth
    raw = (
        b'{"model":"chat-small","messages":[{"role":"user","content":"'
        + b"x" * text_len
        + b'"}],"metadata":'
        + inner
        + b"}"
    )
    result = outcome("/v1/chat/completions", {"content-type": "application/json"}, raw, compiled)
    assert_clean(result)
    if number in (b"1", b"1e-999999"):  # otherwise the bad number may be reported first
        too_deep = isinstance(result, RouterError) and "nested" in result.message
        assert too_deep == (depth + 1 > 64)  # the top-level object is level 1 of max_depth 64
    else:
        assert isinstance(result, RouterError) and result.status == 400


@SETTINGS
@given(text=st.text(max_size=300), key=st.text(max_size=20))
def test_random_unicode_round_trips(compiled: dict[str, CompiledSpec], text: str, key: str) -> None:
    body = {
        "model": "chat-small",
        "messages": [{"role": "user", "content": text}],
        "metadata": {key: text},
    }
    raw = orjson.dumps(body)
    result = outcome("/v1/chat/completions", {"content-type": "application/json"}, raw, compiled)
    assert isinstance(result, InferenceRequest), result
    assert result.body == body


@SETTINGS
@given(limit=st.integers(1, 5000), size=st.integers(0, 20_000))
def test_gzip_bounds(compiled: dict[str, CompiledSpec], limit: int, size: int) -> None:
    raw = gzip.compress(b'{"model":"chat-small","pad":"' + b"a" * size + b'"}')
    h = {"content-type": "application/json", "content-encoding": "gzip"}
    result = outcome("/v1/chat/completions", h, raw, compiled, limit=max(limit, len(raw)))
    assert_clean(result)


def test_binary_bytes_tensors_parse_exactly() -> None:
    blob = b"".join(struct.pack("<I", len(s)) + s for s in (b"", b"a", b"bc"))
    assert kserve_v2.bytes_elements(blob, 3) == 3
    assert kserve_v2.bytes_elements(blob, 2) == -1
    assert kserve_v2.bytes_elements(blob[:-1], 3) == -1
