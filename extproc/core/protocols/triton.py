"""Triton's binary tensor extension: a JSON inference header, then raw tensor bytes.

With ``Inference-Header-Content-Length: N`` only the first N bytes of the
(inflated) body are the JSON header; the rest are the inputs' tensor bytes, in
input order, sized by each input's ``parameters.binary_data_size`` (checked by
:func:`extproc.core.protocols.kserve_v2.check_request`).
"""

from __future__ import annotations

from typing import Any

from extproc.core.errors import InvalidBody
from extproc.core.protocols.json_body import DEFAULT_MAX_DEPTH, loads_object
from extproc.core.request import RequestHead

HEADER = "inference-header-content-length"


def header_length(head: RequestHead) -> int | None:
    """N from ``Inference-Header-Content-Length``; ``None`` without the extension."""
    raw = head.headers.get(HEADER)
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isdigit() or not raw.isascii() or len(raw) > 18:
        raise InvalidBody(f"{HEADER} {raw[:40]!r} is not a byte count", header=HEADER)
    return int(raw)


def split(
    head: RequestHead, raw: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH
) -> tuple[dict[str, Any], memoryview | None]:
    """The JSON header object and the tensor bytes after it (``None`` without the extension).

    400 (field null) when N does not delimit a JSON object inside the body.
    """
    n = header_length(head)
    if n is None:
        return loads_object(raw, max_depth=max_depth), None
    if n == 0 or n > len(raw):
        raise InvalidBody(
            f"{HEADER} is {n}, but the body has {len(raw)} bytes; "
            "it must delimit the JSON inference header",
            header=HEADER,
        )
    try:
        header = loads_object(raw[:n], max_depth=max_depth, what="inference header")
    except InvalidBody as exc:
        if exc.field is not None:  # a duplicate key or an overflow inside a complete header
            raise
        raise InvalidBody(
            f"the first {n} bytes ({HEADER}) are not one JSON object: {exc.message}",
            header=HEADER,
        ) from exc
    return header, memoryview(raw)[n:]
