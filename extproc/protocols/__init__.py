"""Protocol adapters: from a request's path, headers and (when needed) body to an
:class:`~extproc.protocols.base.InferenceRequest`.

:func:`understand_head` decides from the head alone when it can (KServe paths,
``x-model``) and otherwise says which adapter needs the body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extproc.errors import InvalidRequest, MethodNotAllowed
from extproc.protocols import generic, kserve_v2, openai
from extproc.protocols.base import InferenceRequest, ProtocolName, RequestHead
from extproc.protocols.body import check_content_headers, decode_json_object

__all__ = [
    "InferenceRequest",
    "NeedsBody",
    "RequestHead",
    "parse_tags",
    "understand_body",
    "understand_head",
]

_OCTET = frozenset({"application/octet-stream"})


@dataclass(frozen=True, slots=True)
class NeedsBody:
    """The head alone does not identify the model; the body must be read."""

    protocol: ProtocolName
    tags: Mapping[str, str]


def parse_tags(head: RequestHead) -> Mapping[str, str]:
    raw = head.headers.get("x-model-tags")
    if not raw:
        return {}
    tags: dict[str, str] = {}
    for item in raw.split(","):
        k, sep, v = item.strip().partition("=")
        if not sep or not k.strip():
            raise InvalidRequest(f"x-model-tags item {item.strip()!r} is not key=value")
        tags[k.strip()] = v.strip()
    return tags


def understand_head(head: RequestHead) -> InferenceRequest | NeedsBody:
    path = head.path_only
    tags = parse_tags(head)
    if path in openai.PATHS:
        if head.method != "POST":
            raise MethodNotAllowed(f"{head.method} is not allowed on {path}; use POST")
        check_content_headers(head)
        return NeedsBody("openai", tags)
    m = kserve_v2.match(path)
    if m is not None:
        if kserve_v2.is_infer(m):
            if head.method != "POST":
                raise MethodNotAllowed(f"{head.method} is not allowed on {path}; use POST")
            extra = _OCTET if "inference-header-content-length" in head.headers else frozenset()
            check_content_headers(head, also=extra)
        return kserve_v2.from_path(head, m, tags)
    return generic.from_headers(head, tags)


def understand_body(head: RequestHead, need: NeedsBody, raw: bytes, limit: int) -> InferenceRequest:
    body: Mapping[str, Any] = decode_json_object(head, raw, limit)
    # Only OpenAI paths need the body to identify the model today.
    return openai.from_body(head, body, need.tags)
