"""Strict JSON body decoding (400/413 rules of the corpus README), gzip included."""

from __future__ import annotations

import gzip
import json

import pytest

from extproc.core.errors import BodyTooLarge, InvalidBody
from extproc.core.protocols.json_body import (
    decode_json_object,
    escape_token,
    inflate,
    json_pointer,
    loads_object,
)
from extproc.core.request import RequestHead


def head(**headers: str) -> RequestHead:
    return RequestHead(
        "POST", "/v1/chat/completions", {k.replace("_", "-"): v for k, v in headers.items()}
    )


def bad(raw: bytes, **kw: int) -> InvalidBody:
    with pytest.raises(InvalidBody) as info:
        loads_object(raw, **kw)
    return info.value


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xef\xbb\xbf{}",
        b'{"a": "caf\xe9"}',
        b'{"a": "\\ud800"}',  # unpaired surrogate escape
        b'{"a": 1',
        b'{"a": 1} {"b": 2}',
        b'{"a": 1} x',
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b"[]",
        b'"text"',
        b"42",
        b"null",
        b"{'a': 1}",
        b'{"a": 1,}',
        b'{"a": "\x01"}',
    ],
)
def test_unreadable_bodies_are_400_without_field(raw: bytes) -> None:
    assert bad(raw).field is None


def test_trailing_whitespace_is_fine() -> None:
    assert loads_object(b'{"a": 1} \r\n\t') == {"a": 1}


def test_depth_limit_is_a_parameter() -> None:
    nested = b'{"a":' + b"[" * 9 + b"]" * 9 + b"}"  # depth 10
    assert loads_object(nested, max_depth=10)
    assert bad(nested, max_depth=9).field is None
    assert bad(b'{"a":' + b"[" * 10_000 + b"]" * 10_000 + b"}").field is None


def test_depth_counts_real_nesting_not_brackets_in_strings() -> None:
    raw = json.dumps({"a": "[" * 100, "b": [[1]] * 100}).encode()
    assert loads_object(raw, max_depth=3)
    assert bad(json.dumps({"b": [[[1]]] * 100}).encode(), max_depth=3)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"model":"a","messages":[],"model":"b"}', "/model"),
        (b'{"a":{"b":1,"c":2,"b":3}}', "/a/b"),
        (b'{"a":[1,{"x":1,"x":1}]}', "/a/1/x"),
        (b'{"a/b":1,"a/b":2}', "/a~1b"),
        (b'{"m~n":1,"m~n":2}', "/m~0n"),
        (b'{"":1,"":2}', "/"),
        (b'{"k:1":"v:2","k:1":"v:3"}', "/k:1"),
        # An escaped colon must not hide a duplicate from the colon count.
        (b'{"a":1,"a":2,"b":"\\u003a"}', "/a"),
        (b'{"a":1,"a":2,"b":"\\u003A"}', "/a"),
        # Escaped key that equals an unescaped one.
        (b'{"ab":1,"\\u0061b":2}', "/ab"),
        (b'{"k\\\\":1,"k\\\\":2}', "/k\\"),
    ],
)
def test_duplicate_keys_point_at_the_key(raw: bytes, field: str) -> None:
    err = bad(raw)
    assert err.field == field
    assert "repeats the key" in err.message


def test_duplicates_in_big_bodies_found_by_both_strategies() -> None:
    # Many values (tensor-like): the byte-count strategy.
    many = json.dumps({"data": list(range(5000)), "x": {"k": 1}}).encode()
    assert loads_object(many)
    assert bad(many.replace(b'{"k": 1}', b'{"k": 1, "k": 2}')).field == "/x/k"
    # Few values, many bytes (long chat text): the walk strategy.
    text = "note: see https://example.com " * 1000
    long = json.dumps({"messages": [{"role": "user", "content": text}], "model": "m"}).encode()
    assert loads_object(long)
    assert bad(long[:-1] + b', "model": "n"}').field == "/model"
    # More brackets than max_depth: the depth walk also counts the colons.
    nested = json.dumps({"t": [[[i, "a:b"]] for i in range(300)], "x": {"k": 1}}).encode()
    assert loads_object(nested, max_depth=8)
    assert bad(nested.replace(b'{"k": 1}', b'{"k": 1, "k": 2}'), max_depth=8).field == "/x/k"
    assert bad(nested, max_depth=3).field is None  # 4 levels: too deep


def test_colons_and_escapes_in_text_are_not_duplicates() -> None:
    body = {"a": "x:y", "b:c": ["::", {"d": "\\u003a literal"}], "e": ":" * 50}
    for raw in (json.dumps(body).encode(), json.dumps(body, ensure_ascii=False).encode()):
        assert loads_object(raw) == body
    assert loads_object(b'{"a":"\\u003a","b":"\\\\u003a"}') == {"a": ":", "b": "\\u003a"}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"model":"m","temperature":1e999999}', "/temperature"),
        (b'{"a":[1,2,{"b":-1e400}]}', "/a/2/b"),
        (b'{"a/b":' + b"9" * 400 + b"}", "/a~1b"),
        (b'{"a":' + b"9" * 5000 + b"}", "/a"),
    ],
)
def test_overflowing_numbers_point_at_their_member(raw: bytes, field: str) -> None:
    err = bad(raw)
    assert err.field == field
    assert "overflows" in err.message


def test_big_but_finite_numbers_are_fine() -> None:
    assert loads_object(b'{"a":1e308,"b":1e-400,"c":18446744073709551616}')["a"] == 1e308


def test_pointer_escaping() -> None:
    assert escape_token("a/b~c") == "a~1b~0c"
    assert escape_token(3) == "3"
    assert json_pointer([]) == ""
    assert json_pointer(["messages", 0, "role"]) == "/messages/0/role"
    assert json_pointer(["~1"]) == "/~01"


def test_gzip_is_inflated_within_the_limit() -> None:
    raw = json.dumps({"model": "m", "pad": "x" * 5000}).encode()
    z = gzip.compress(raw)
    assert decode_json_object(head(content_encoding="GZip"), z, 10_000)["model"] == "m"
    with pytest.raises(BodyTooLarge):
        decode_json_object(head(content_encoding="gzip"), z, 4096)
    with pytest.raises(InvalidBody):
        decode_json_object(head(content_encoding="gzip"), z[:-5], 10_000)
    with pytest.raises(InvalidBody):
        decode_json_object(head(content_encoding="gzip"), raw, 10_000)
    with pytest.raises(InvalidBody):
        inflate(z + b"junk", 10_000)


def test_gzip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"[" * 5_000_000)
    with pytest.raises(BodyTooLarge):
        inflate(bomb, 1_048_576)
