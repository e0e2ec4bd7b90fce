"""Turning a request body into one JSON object, with bounded work.

Checks run in the documented order: media type (415), size (413), then
decoding (400). gzip is inflated with a hard bound on the inflated size.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from extproc.errors import BodyTooLarge, InvalidBody, UnsupportedMediaType
from extproc.protocols.base import RequestHead

_JSON_TYPES = frozenset({"application/json"})


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


def check_content_headers(head: RequestHead, *, also: frozenset[str] = frozenset()) -> None:
    """415 unless the body is JSON (or one of ``also``), UTF-8, identity or gzip coded."""
    mtype, params = media_type(head)
    if not mtype:
        raise UnsupportedMediaType("content-type header is required (application/json)")
    if mtype not in _JSON_TYPES and mtype not in also:
        raise UnsupportedMediaType(f"content-type {mtype!r} is not supported; use application/json")
    charset = params.get("charset")
    if charset is not None and charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"charset {charset!r} is not supported; use utf-8")
    coding = head.headers.get("content-encoding", "identity").strip().lower()
    if coding not in ("identity", "gzip", ""):
        raise UnsupportedMediaType(f"content-encoding {coding!r} is not supported (identity, gzip)")


def declared_length(head: RequestHead) -> int | None:
    raw = head.headers.get("content-length")
    if raw is None or not raw.isdigit():
        return None
    return int(raw)


def inflate(raw: bytes, limit: int) -> bytes:
    """gunzip ``raw``, refusing to produce more than ``limit`` bytes."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise InvalidBody(f"content-encoding gzip, but the body is not valid gzip: {exc}") from exc
    if len(out) > limit or d.unconsumed_tail:
        raise BodyTooLarge(f"gzip body inflates to more than the {limit}-byte limit")
    if not d.eof:
        raise InvalidBody("content-encoding gzip, but the gzip stream is truncated")
    return out


def decode_json_object(head: RequestHead, raw: bytes, limit: int) -> dict[str, Any]:
    """The body as one JSON object, or a 400/413 naming what is wrong."""
    if head.headers.get("content-encoding", "").strip().lower() == "gzip":
        raw = inflate(raw, limit)
    if not raw:
        raise InvalidBody("request body is empty; a JSON object is required")
    if raw.startswith(b"\xef\xbb\xbf"):
        raise InvalidBody("request body starts with a byte order mark; send plain UTF-8 JSON")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidBody(f"request body must be a JSON object, not {type(value).__name__}")
    return value
