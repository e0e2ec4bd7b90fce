"""Protocol adapters: from a request's path, headers and (when needed) body to an
:class:`~extproc.core.request.InferenceRequest`.

:func:`understand_head` decides from the head alone when it can (KServe paths,
``x-model``), says which adapter needs the body, or names the server endpoint the
router answers itself (:class:`ServerCall`). :func:`error_protocol` says which
protocol's error shape a path's errors take.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from extproc.core import capabilities
from extproc.core.capabilities import Requirements
from extproc.core.errors import MethodNotAllowed
from extproc.core.protocols import generic, kserve_v2, openai, triton
from extproc.core.protocols.json_body import (
    DEFAULT_MAX_DEPTH,
    KSERVE_CODINGS,
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
    "ServerCall",
    "error_protocol",
    "parse_capabilities",
    "understand_body",
    "understand_head",
    "with_kserve_body",
]

_OCTET = frozenset({"application/octet-stream"})
_NO_TYPES: frozenset[str] = frozenset()
CAPABILITIES_HEADER = "x-model-capabilities"


@dataclass(frozen=True, slots=True)
class NeedsBody:
    """The head alone does not identify the model; the body must be read."""

    protocol: ProtocolName
    capabilities: Requirements
    request: InferenceRequest | None = None
    """For KServe infer calls whose body the caller wants checked: the request the
    path identified (see :func:`with_kserve_body`)."""


@dataclass(frozen=True, slots=True)
class ServerCall:
    """A server endpoint the router answers itself (:mod:`extproc.core.answers`): KServe
    v2 server health and metadata, the model lists of both protocols."""

    endpoint: str
    """``kserve_server_live``, ``kserve_server_ready``, ``kserve_server_metadata``,
    ``kserve_models``, ``openai_models`` or ``openai_model``."""
    model: str | None = None
    """``openai_model``: the model asked for."""


def parse_capabilities(head: RequestHead) -> Requirements:
    raw = head.headers.get(CAPABILITIES_HEADER)
    return capabilities.parse(raw, source=CAPABILITIES_HEADER) if raw else ()


def error_protocol(path: str) -> ProtocolName:
    """Whose error shape errors on ``path`` (without its query) take: OpenAI paths
    (``openai.PATHS_REGEX``) and the KServe v2 namespace (``/v2``...) their protocol's,
    everything else the router's own."""
    if path in openai.PATHS or (path.startswith(openai.MODELS) and _OPENAI_PATH.match(path)):
        return "openai"
    if kserve_v2.is_kserve_path(path):
        return "kserve_v2"
    return "generic"


_OPENAI_PATH = re.compile(openai.PATHS_REGEX)


def _only(head: RequestHead, method: str) -> None:
    if head.method != method:
        raise MethodNotAllowed(f"{head.method} is not allowed on {head.path_only}; use {method}")


def understand_head(head: RequestHead) -> InferenceRequest | NeedsBody | ServerCall:
    path = head.path_only
    if path in openai.PATHS:
        _only(head, "POST")
        check_content_headers(head)
        return NeedsBody("openai", parse_capabilities(head))
    m = kserve_v2.match(path)  # the common case first: a model-level KServe path
    if m is not None:
        if m.op in kserve_v2.POST_OPERATIONS and head.method != "POST":
            _only(head, "POST")
        if m.op == "/infer":
            # No content-type: JSON, or the binary extension with its header (as Triton
            # reads them, and tritonclient sends none); deflate beside gzip.
            headers = head.headers
            if headers.get("content-type") != "application/json" or "content-encoding" in headers:
                extra = _OCTET if triton.HEADER in headers else _NO_TYPES
                check_content_headers(head, also=extra, optional=True, codings=KSERVE_CODINGS)
        return kserve_v2.from_path(head, m, parse_capabilities(head))
    if kserve_v2.is_kserve_path(path):
        endpoint = kserve_v2.server_endpoint(path)
        _only(head, "GET")
        return ServerCall(endpoint)
    if error_protocol(path) == "openai":  # /v1/models[/{id}]
        _only(head, "GET")
        model = unquote(path[len(openai.MODELS) + 1 :])
        return ServerCall("openai_model", model) if model else ServerCall("openai_models")
    return generic.from_headers(head, parse_capabilities(head))


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
