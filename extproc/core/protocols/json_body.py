"""Turning a request body into one JSON object, with bounded work.

Checks run in the documented order: media type (415), size (413), then
decoding (400). gzip (and, on KServe v2 paths, deflate) is inflated with a hard
bound on the inflated size.

Decoding is strict (RFC 8259 plus the corpus rules): empty bodies, a leading
BOM, invalid UTF-8 (lone surrogates included), truncated or trailing data,
``NaN``/``Infinity``, nesting deeper than ``max_depth``, duplicate keys, numbers
that overflow a double and non-object documents are all 400s.

The happy path is orjson plus two cheap checks (depth, duplicate keys) that
work on byte counts and one re-serialisation in C; a slower precise pass with
:func:`json.loads` hooks runs only when a check is inconclusive or to find the
JSON Pointer of an overflowing number or of a duplicated key.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Iterable
from typing import Any

import orjson

from extproc.core.errors import BodyTooLarge, InvalidBody, UnsupportedMediaType, shown
from extproc.core.request import RequestHead

_JSON_TYPES = frozenset({"application/json"})
_BOM = b"\xef\xbb\xbf"

DEFAULT_MAX_DEPTH = 512
"""Deepest nesting of arrays/objects accepted (the top-level object is depth 1).

orjson itself refuses documents nested deeper than 1024, so larger values act as 1024.
"""


def media_type(head: RequestHead) -> tuple[str, dict[str, str]]:
    """The lower-cased media type and its parameters from ``content-type``."""
    raw = head.headers.get("content-type", "")
    main, _, rest = raw.partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        k, sep, v = part.partition("=")
        if sep:
            params[k.strip().lower()] = v.strip().strip('"').lower()
    return main.strip().lower(), params


CODINGS = ("identity", "gzip")
"""Content codings accepted on request bodies (and ``deflate`` too on KServe v2 paths)."""
KSERVE_CODINGS = ("identity", "gzip", "deflate")


def check_content_headers(
    head: RequestHead,
    *,
    also: frozenset[str] = frozenset(),
    optional: bool = False,
    codings: tuple[str, ...] = CODINGS,
) -> None:
    """415 unless the body is JSON (or one of ``also``), UTF-8, and coded with one of
    ``codings``. ``optional``: a missing ``content-type`` is fine (read as JSON)."""
    headers = head.headers
    if headers.get("content-type") == "application/json" and "content-encoding" not in headers:
        return  # the common case, without parsing
    mtype, params = media_type(head)
    if not mtype:
        if not optional:
            raise UnsupportedMediaType(
                "content-type header is required (application/json)", header="content-type"
            )
    elif mtype not in _JSON_TYPES and mtype not in also:
        raise UnsupportedMediaType(
            f"content-type {shown(mtype)} is not supported; use application/json",
            header="content-type",
        )
    charset = params.get("charset")
    if charset is not None and charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(
            f"charset {shown(charset)} is not supported; use utf-8", header="content-type"
        )
    coding = content_coding(head)
    if coding not in codings:
        raise UnsupportedMediaType(
            f"content-encoding {shown(coding)} is not supported ({', '.join(codings)})",
            header="content-encoding",
        )


def declared_length(head: RequestHead) -> int | None:
    raw = head.headers.get("content-length")
    if raw is None or not raw.isdigit():
        return None
    return int(raw)


def content_coding(head: RequestHead) -> str:
    """The body's content coding, lower-cased (``identity`` when none is named)."""
    return head.headers.get("content-encoding", "").strip().lower() or "identity"


def is_compressed(head: RequestHead) -> bool:
    return content_coding(head) != "identity"


def _zlib_header(raw: bytes) -> bool:
    """RFC 1950: compression method 8 and a header checksum that divides by 31."""
    return len(raw) >= 2 and raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0


def inflate(raw: bytes, limit: int, coding: str = "gzip") -> bytes:
    """Decompress ``raw`` (``gzip``, or ``deflate``: zlib data, or raw deflate as some
    clients send it), refusing to produce more than ``limit`` bytes."""
    if coding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    else:
        wbits = zlib.MAX_WBITS if _zlib_header(raw) else -zlib.MAX_WBITS
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise InvalidBody(
            f"content-encoding {coding}, but the body is not valid {coding} data: {exc}"
        ) from exc
    if len(out) > limit or d.unconsumed_tail:
        raise BodyTooLarge(f"{coding} body inflates to more than the {limit}-byte limit")
    if not d.eof:
        raise InvalidBody(f"content-encoding {coding}, but the {coding} stream is truncated")
    if d.unused_data:
        raise InvalidBody(f"content-encoding {coding}, but data follows the {coding} stream")
    return out


def plain_body(head: RequestHead, raw: bytes, limit: int) -> bytes:
    """The body with its content coding removed (inflated within ``limit``); the coding
    was checked with the head (:func:`check_content_headers`)."""
    coding = content_coding(head)
    return raw if coding == "identity" else inflate(raw, limit, coding)


# --------------------------------------------------------------------------- pointers


def escape_token(token: str | int) -> str:
    """One RFC 6901 reference token: ``~`` becomes ``~0`` and ``/`` becomes ``~1``."""
    s = str(token)
    if "~" in s or "/" in s:
        s = s.replace("~", "~0").replace("/", "~1")
    return s


def json_pointer(parts: Iterable[str | int]) -> str:
    """The JSON Pointer of ``parts`` (``[]`` is the whole document, ``""``)."""
    return "".join("/" + escape_token(p) for p in parts)


# --------------------------------------------------------------------------- decoding


def decode_json_object(
    head: RequestHead, raw: bytes, limit: int, *, max_depth: int = DEFAULT_MAX_DEPTH
) -> dict[str, Any]:
    """The body as one JSON object, or a 400/413 naming what is wrong."""
    return loads_object(plain_body(head, raw, limit), max_depth=max_depth)


def loads_object(
    raw: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, what: str = "request body"
) -> dict[str, Any]:
    """Strictly decode ``raw`` (already without content coding) as one JSON object."""
    if not raw:
        raise InvalidBody(f"{what} is empty; a JSON object is required")
    if raw.startswith(_BOM):
        raise InvalidBody(f"{what} starts with a byte order mark; send plain UTF-8 JSON")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _parse_error(raw, exc, what) from exc
    if type(value) is not dict:
        raise InvalidBody(f"{what} must be a JSON object, not {_json_type(value)}")
    _check_structure(raw, value, max_depth, what)
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _parse_error(raw: bytes, exc: orjson.JSONDecodeError, what: str) -> InvalidBody:
    msg = str(exc)
    if "not valid UTF-8" in msg or "surrogate" in msg:
        return InvalidBody(f"{what} is not valid UTF-8 text (or has an unpaired surrogate escape)")
    if "depth limit" in msg or "recursion" in msg.lower():
        return InvalidBody(f"{what} is nested too deeply")
    if "infinity" in msg:
        tree = _precise(raw)
        found = _find(tree, _Overflow) if tree is not None else None
        field = json_pointer(found[0]) if found is not None else None
        return InvalidBody(f"{what} has a number that overflows a double", field=field)
    return InvalidBody(f"{what} is not valid JSON: {msg}")


_WALK_BUDGET = 2048
"""Values the quick structure walk visits before it leaves the work to byte counts."""
_WALK_FROM_BYTES = 16384
"""Below this size the byte counts are cheaper than the walk."""
_ESCAPED_COLON = re.compile(rb"\\u003[aA]")


def _check_structure(raw: bytes, value: dict[str, Any], max_depth: int, what: str) -> None:
    """400 if ``value`` nests deeper than ``max_depth`` or ``raw`` repeats a key in an object.

    orjson keeps the last of duplicated keys silently. Every key in ``raw`` is
    followed by exactly one ``:`` and every other ``:`` sits inside a string, so
    with no duplicates ``raw`` has exactly (keys + colons inside decoded
    strings) colons, and each dropped duplicate makes ``raw`` have more.
    ``\\u003a`` escapes count as colons of ``raw`` (an over-count only costs the
    precise pass, never a missed duplicate).

    The decoded colon count comes from orjson's re-serialisation (C; it never
    escapes ``:``), and a bracket count bounds the depth; only documents with
    more brackets than ``max_depth`` are walked for their real depth. Big bodies
    with few values (long chat texts) are walked instead: one walk, costing per
    value rather than per byte, measures depth and counts colons exactly.
    """
    colons = raw.count(b":")
    if b"\\" in raw and _ESCAPED_COLON.search(raw):
        colons += len(_ESCAPED_COLON.findall(raw))
    # The walk costs per value, the byte counts per byte: walk big bodies first.
    decoded = _walk(value, max_depth, what) if len(raw) > _WALK_FROM_BYTES else None
    if decoded is None:
        # Depth d takes 2d bytes, and every container opens with a bracket.
        if len(raw) > 2 * max_depth and raw.count(b"[") + raw.count(b"{") > max_depth:
            decoded = _walk(value, max_depth, what, budget=math.inf)  # the real depth
        else:
            decoded = orjson.dumps(value).count(b":")
    if decoded == colons:
        return
    tree = _precise(raw)
    if tree is None:  # only past Python's recursion limit, i.e. a max_depth near 1000
        raise InvalidBody(f"{what} could not be checked for duplicate keys (nested too deeply)")
    found = _find(tree, _Duplicate)
    if found is not None:
        path, dup = found
        assert isinstance(dup, _Duplicate)
        raise InvalidBody(
            f"{what} repeats the key {_short(dup.key)} in one object",
            field=json_pointer([*path, dup.key]),
        )
    # No duplicate after all: the count was thrown off by literal text such as "\\u003a".


def _walk(
    value: dict[str, Any], max_depth: int, what: str, budget: float = _WALK_BUDGET
) -> int | None:
    """Colons the decoded ``value`` accounts for (keys plus colons in strings), or
    ``None`` when it holds more than ``budget`` values. Checks depth as it goes."""
    colons = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > max_depth:
            raise InvalidBody(f"{what} is nested deeper than {max_depth} levels")
        budget -= len(node)
        if budget < 0:
            return None
        if type(node) is dict:
            colons += len(node)
            for k in node:
                if ":" in k:
                    colons += k.count(":")
            children = node.values()
        else:
            children = node
        for child in children:
            t = type(child)
            if t is str:
                if ":" in child:
                    colons += child.count(":")
            elif t is dict or t is list:
                push((child, depth + 1))
    return colons


def _short(s: str, n: int = 64) -> str:
    return repr(s if len(s) <= n else s[:n] + "...")


# --------------------------------------------------------------------------- precise pass


class _Duplicate:
    """Stands in for an object with a repeated key in the precise pass."""

    __slots__ = ("key", "pairs")

    def __init__(self, key: str, pairs: list[tuple[str, Any]]) -> None:
        self.key = key
        self.pairs = pairs


class _Overflow:
    """Stands in for a number that overflows a double in the precise pass."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any] | _Duplicate:
    d = dict(pairs)
    if len(d) == len(pairs):
        return d
    seen: set[str] = set()
    for k, _ in pairs:
        if k in seen:
            return _Duplicate(k, pairs)
        seen.add(k)
    return d  # pragma: no cover - unreachable


def _float(text: str) -> float | _Overflow:
    f = float(text)
    return _Overflow(text) if math.isinf(f) else f


def _int(text: str) -> int | _Overflow:
    # float() first: int() refuses more than 4300 digits, and anything past 309 overflows.
    if len(text) > 300 and math.isinf(float(text)):
        return _Overflow(text)
    return int(text)


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _precise(raw: bytes) -> Any:
    """``raw`` decoded with markers for duplicates and overflows; ``None`` if it won't decode."""
    try:
        return json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_pairs,
            parse_float=_float,
            parse_int=_int,
            parse_constant=_constant,
        )
    except (ValueError, RecursionError):
        return None


def _find(tree: Any, kind: type) -> tuple[list[str | int], object] | None:
    """Path (document order, outermost first) and marker of the first ``kind`` in ``tree``."""
    stack: list[tuple[Any, list[str | int]]] = [(tree, [])]
    while stack:
        node, path = stack.pop()
        if type(node) is kind:
            return path, node
        items: list[tuple[str | int, Any]]
        if type(node) is dict:
            items = list(node.items())
        elif type(node) is _Duplicate:
            items = list(node.pairs)
        elif type(node) is list:
            items = list(enumerate(node))
        else:
            continue
        stack.extend((child, [*path, key]) for key, child in reversed(items))
    return None
