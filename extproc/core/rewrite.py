"""What changes on the way upstream when a content rule picked another model.

OpenAI: the body's ``model`` (and ``content-length``; a compressed body is sent inflated).
KServe v2: the path's model and version. Generic: ``x-model`` / ``x-model-version``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import orjson

from extproc.core.protocols.json_body import is_compressed
from extproc.core.request import InferenceRequest


@dataclass(frozen=True, slots=True)
class Rewrite:
    set_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    body: bytes | None = None
    """Replacement body (``content-length`` is in ``set_headers``)."""


def for_upstream(original: InferenceRequest, final: InferenceRequest) -> Rewrite | None:
    """The rewrite that makes the upstream see ``final``; None when nothing changed."""
    if final.model == original.model and final.version == original.version:
        return None
    head = final.head
    version = final.version
    if final.protocol == "openai" and final.body is not None:
        headers: list[tuple[str, str]] = []
        body = None
        if final.model != original.model:
            body = orjson.dumps({**final.body, "model": final.model})
            headers.append(("content-length", str(len(body))))
        if version is not None:
            headers.append(("x-model-version", version))
        remove = ("content-encoding",) if body is not None and is_compressed(final.head) else ()
        return Rewrite(tuple(headers), remove, body)
    if final.protocol == "kserve_v2":
        _, sep, query = head.path.partition("?")
        path = "/v2/models/" + quote(final.model, safe="/:.-_~")
        if version is not None:
            path += "/versions/" + quote(version, safe=".-_~")
        path += "/infer" + (sep + query if sep else "")
        return Rewrite(((":path", path),))
    headers = [("x-model", final.model)]
    if version is not None:
        headers.append(("x-model-version", version))
    return Rewrite(tuple(headers), () if version is not None else ("x-model-version",))
