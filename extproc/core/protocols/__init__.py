"""Protocol adapters: from a request's path, headers and (when needed) body to an
:class:`~extproc.core.request.InferenceRequest`.

:func:`understand_head` decides from the head alone when it can (KServe paths,
``x-model``) and otherwise says which adapter needs the body.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extproc.core import capabilities
from extproc.core.capabilities import Requirements
from extproc.core.errors import MethodNotAllowed
from extproc.core.protocols import generic, kserve_v2, openai, triton
from extproc.core.protocols.json_body import (
    DEFAULT_MAX_DEPTH,
    check_content_headers,
    decode_json_object,
    plain_body,
)
from extproc.core.request import InferenceRequest, ProtocolName, RequestHead

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "InferenceRequest",
    "NeedsBody",
    "RequestHead",
    "parse_capabilities",
    "understand_body",
    "understand_head",
    "with_kserve_body",
]

_OCTET = frozenset({"application/octet-stream"})
CAPABILITIES_HEADER = "x-model-capabilities"


@dataclass(frozen=True, slots=True)
class NeedsBody:
    """The head alone does not identify the model; the body must be read."""

    protocol: ProtocolName
    capabilities: Requirements
    request: InferenceRequest | None = None
    """For KServe infer calls whose body the caller wants checked: the request the
    path identified (see :func:`with_kserve_body`)."""


def parse_capabilities(head: RequestHead) -> Requirements:
    raw = head.headers.get(CAPABILITIES_HEADER)
    return capabilities.parse(raw, source=CAPABILITIES_HEADER) if raw else ()


def understand_head(head: RequestHead) -> InferenceRequest | NeedsBody:
    path = head.path_only
    caps = parse_capabilities(head)
    if path in openai.PATHS:
        if head.method != "POST":
            raise MethodNotAllowed(f"{head.method} is not allowed on {path}; use POST")
        check_content_headers(head)
        return NeedsBody("openai", caps)
    m = kserve_v2.match(path)
    if m is not None:
        if kserve_v2.is_infer(m):
            if head.method != "POST":
                raise MethodNotAllowed(f"{head.method} is not allowed on {path}; use POST")
            extra = _OCTET if "inference-header-content-length" in head.headers else frozenset()
            check_content_headers(head, also=extra)
        return kserve_v2.from_path(head, m, caps)
    return generic.from_headers(head, caps)


def understand_body(
    head: RequestHead,
    need: NeedsBody,
    raw: bytes,
    limit: int,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> InferenceRequest:
    """Decode the body (400/413) and check it is well-formed for its protocol (400).

    OpenAI: the model comes from the body. KServe (``need.request`` set): the
    request the path identified, with its JSON (header) body attached.
    """
    if need.request is not None and need.protocol == "kserve_v2":
        return with_kserve_body(need.request, raw, limit, max_depth=max_depth)
    body: Mapping[str, Any] = decode_json_object(head, raw, limit, max_depth=max_depth)
    return openai.from_body(head, body, need.capabilities)


def with_kserve_body(
    request: InferenceRequest, raw: bytes, limit: int, *, max_depth: int = DEFAULT_MAX_DEPTH
) -> InferenceRequest:
    """``request`` (identified from a KServe infer path) with its body decoded and checked.

    gzip is inflated within ``limit`` (413); with the binary tensor extension
    the JSON header is split off (400 when the header length does not delimit
    a JSON object) and the tensor bytes are sized against the inputs (400).
    """
    head = request.head
    header, binary = triton.split(head, plain_body(head, raw, limit), max_depth=max_depth)
    kserve_v2.check_request(header, binary)
    return dataclasses.replace(request, body=header)
