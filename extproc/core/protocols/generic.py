"""Any other JSON API: the client names the model in ``x-model`` (and ``x-model-version``)."""

from __future__ import annotations

from extproc.core.capabilities import Requirements
from extproc.core.errors import InvalidRequest, shown
from extproc.core.request import InferenceRequest, RequestHead


def from_headers(head: RequestHead, capabilities: Requirements) -> InferenceRequest:
    model = head.headers.get("x-model")
    if not model:
        raise InvalidRequest(
            f"path {shown(head.path_only)} is not an OpenAI or KServe v2 path; "
            "name the model in the x-model header",
            header="x-model",
        )
    version = head.headers.get("x-model-version") or None
    return InferenceRequest(
        protocol="generic",
        model=model,
        version=version,
        head=head,
        capabilities=capabilities,
        source="header x-model" + (", header x-model-version" if version else ""),
    )
