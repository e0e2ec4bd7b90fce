"""KServe v2 / Open Inference Protocol (Triton): model and version come from the path."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import unquote

from extproc.errors import InvalidRequest
from extproc.protocols.base import InferenceRequest, RequestHead

# /v2/models/{name}[/versions/{v}][/infer|/ready]; names may contain '/', '.', ':'.
PATH = re.compile(
    r"^/v2/models/(?P<name>.+?)(?:/versions/(?P<version>[^/]+))?(?P<op>/infer|/ready)?$"
)


def match(path: str) -> re.Match[str] | None:
    return PATH.match(path)


def is_infer(m: re.Match[str]) -> bool:
    return m["op"] == "/infer"


def from_path(head: RequestHead, m: re.Match[str], tags: Mapping[str, str]) -> InferenceRequest:
    name = unquote(m["name"])
    if not name:
        raise InvalidRequest("model name in the path is empty")
    path_version = unquote(m["version"]) if m["version"] else None
    header_version = head.headers.get("x-model-version") or None
    version = path_version or header_version
    source = "path" if path_version or not header_version else "path, header x-model-version"
    return InferenceRequest(
        protocol="kserve_v2", model=name, version=version, head=head, tags=tags, source=source
    )
