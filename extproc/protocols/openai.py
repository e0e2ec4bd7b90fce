"""OpenAI-compatible APIs (vLLM, TGI, SGLang...): the model is the body's ``model``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from extproc.errors import InvalidRequest
from extproc.protocols.base import InferenceRequest, RequestHead

PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})


def from_body(
    head: RequestHead, body: Mapping[str, Any], tags: Mapping[str, str]
) -> InferenceRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        what = "missing" if model is None else "not a non-empty string"
        raise InvalidRequest(f"'model' is {what}", field="/model")
    version = head.headers.get("x-model-version") or None
    return InferenceRequest(
        protocol="openai",
        model=model,
        version=version,
        head=head,
        body=body,
        tags=tags,
        source="body 'model'" + (", header x-model-version" if version else ""),
        model_field="/model",
    )
