"""The Triton binary tensor extension: the JSON header split from the tensor bytes."""

from __future__ import annotations

import json
import struct

import pytest

from extproc.core.errors import InvalidBody
from extproc.core.protocols.triton import header_length, split
from extproc.core.request import RequestHead


def triton_head(n: object) -> RequestHead:
    return RequestHead(
        "POST",
        "/v2/models/m/infer",
        {"content-type": "application/octet-stream", "inference-header-content-length": str(n)},
    )


def test_triton_split_returns_header_and_tensor_bytes() -> None:
    hdr = json.dumps({"inputs": [{"name": "x"}]}).encode()
    blob = struct.pack("<4f", 1, 2, 3, 4)
    header, rest = split(triton_head(len(hdr)), hdr + blob)
    assert header == {"inputs": [{"name": "x"}]}
    assert rest is not None and bytes(rest) == blob


def test_without_the_header_the_body_is_plain_json() -> None:
    h = RequestHead("POST", "/v2/models/m/infer", {"content-type": "application/json"})
    assert header_length(h) is None
    assert split(h, b'{"inputs":[]}') == ({"inputs": []}, None)


@pytest.mark.parametrize("delta", [-6, -1, 1, 6])
def test_a_wrong_header_length_is_400_without_field(delta: int) -> None:
    hdr = json.dumps({"inputs": [{"name": "x", "shape": [1]}]}).encode()
    with pytest.raises(InvalidBody) as info:
        split(triton_head(len(hdr) + delta), hdr + b"\x00\x00\x80\x3f")
    assert info.value.field is None


@pytest.mark.parametrize("n", ["", "abc", "-3", "0", "1e3", "99999999999999999999999", "٣"])
def test_a_bad_header_length_value_is_400(n: str) -> None:
    with pytest.raises(InvalidBody) as info:
        split(triton_head(n), b'{"inputs":[]}')
    assert info.value.field is None
