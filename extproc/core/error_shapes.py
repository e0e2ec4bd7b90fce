"""Each protocol's error shape: the one definition of what an error response looks like.

The router's own answers (:func:`extproc.core.envoy_wire.immediate`), the direct
responses of the routes it serves Envoy (:mod:`extproc.control.xds.routes`) and the
local replies Envoy makes itself (rendered into the bootstrap by
:mod:`extproc.ops.envoy_config`) all build their bodies here, so a client sees one
shape per path whoever answered:

* OpenAI paths: the OpenAI error object, ``{"error": {"message", "type", "param",
  "code"}}``; ``type`` is OpenAI's category (``invalid_request_error``...), ``param``
  the JSON Pointer of the offending field or the name of the offending header,
  ``code`` the router's error type. The OpenAI SDKs fill ``.message``, ``.type``,
  ``.param`` and ``.code`` of their exceptions from it.
* KServe v2 paths: the Open Inference Protocol's ``{"error": "<message>"}``
  (``tritonclient`` prints it).
* Anything else: the router's own ``{"error": {"type", "message", "field"}}``.

Every error response also carries ``x-model-router-error: <type>`` and, when the error
is about one field, ``x-model-router-error-field: <JSON Pointer>`` (percent-encoded by
:func:`encode_header_value`), the same on every path.
"""

from __future__ import annotations

from typing import Any

from extproc.core.request import ProtocolName

ERROR_HEADER = "x-model-router-error"
ERROR_FIELD_HEADER = "x-model-router-error-field"


def openai_error_type(status: int) -> str:
    """OpenAI's error category for an HTTP status."""
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_document(
    protocol: ProtocolName,
    *,
    status: int,
    type: str,
    message: str,
    field: str | None = None,
    header: str | None = None,
) -> dict[str, Any]:
    """The JSON error body for a request on a ``protocol`` path."""
    if protocol == "openai":
        return {
            "error": {
                "message": message,
                "type": openai_error_type(status),
                "param": field if field is not None else header,
                "code": type,
            }
        }
    if protocol == "kserve_v2":
        return {"error": message}
    return {"error": {"type": type, "message": message, "field": field}}


def encode_header_value(text: str) -> str:
    """``text`` safe in an HTTP header: characters outside visible ASCII (``!`` to ``~``),
    and ``%``, percent-encoded as UTF-8 (so ``/a b`` becomes ``/a%20b``)."""
    if text.isascii() and text.isprintable() and " " not in text and "%" not in text:
        return text
    out = []
    for ch in text:
        if "!" <= ch <= "~" and ch != "%":
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)
