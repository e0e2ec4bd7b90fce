"""The request-understanding order in-process, without the ext_proc flow.

405/415 (head) -> 413 (size) -> 400 (body) -> 400 (protocol) -> 404 (model,
version) -> 422 (spec). KServe and generic requests name their model in the
head, so their 404 comes before the body is read (as the README allows); an
OpenAI request's model is only known once the body decoded and is well-formed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from extproc.errors import BodyTooLarge, ModelNotFound, VersionNotFound
from extproc.protocols import (
    DEFAULT_MAX_DEPTH,
    InferenceRequest,
    NeedsBody,
    RequestHead,
    kserve_v2,
    understand_body,
    understand_head,
    with_kserve_body,
)
from extproc.validation import CompiledSpec

LIMIT = 1_048_576


@dataclass
class Result:
    request: InferenceRequest
    checks: list[str] = field(default_factory=list)


def lookup(request: InferenceRequest, specs: Mapping[str, CompiledSpec]) -> CompiledSpec:
    spec = specs.get(request.model)
    if spec is None:
        raise ModelNotFound(f"model {request.model!r} is not registered", field=request.model_field)
    if request.version is not None and request.version not in spec.versions:
        raise VersionNotFound(f"model {request.model!r} has no version {request.version!r}")
    return spec


def run(
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    specs: Mapping[str, CompiledSpec],
    *,
    limit: int = LIMIT,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Result:
    """Understand and validate one request; raises the first :class:`RouterError`."""
    head = RequestHead(method, path, {k.lower(): v for k, v in headers.items()})
    understood = understand_head(head)
    if isinstance(understood, NeedsBody):
        if len(body) > limit:
            raise BodyTooLarge(f"body of {len(body)} bytes is over the {limit}-byte limit")
        request = understand_body(head, understood, body, limit, max_depth=max_depth)
        spec = lookup(request, specs)
    else:
        request = understood
        spec = lookup(request, specs)
        m = kserve_v2.match(head.path_only)
        if request.protocol == "kserve_v2" and m is not None and kserve_v2.is_infer(m):
            if len(body) > limit:
                raise BodyTooLarge(f"body of {len(body)} bytes is over the {limit}-byte limit")
            request = with_kserve_body(request, body, limit, max_depth=max_depth)
    return Result(request, spec.check(request.body, request.protocol, head.path_only))
