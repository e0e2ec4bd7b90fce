"""What every protocol adapter produces: one :class:`InferenceRequest`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from extproc.core.capabilities import Requirements

ProtocolName = Literal["openai", "kserve_v2", "generic"]
"""The protocols the router speaks (the one place they are named)."""
PROTOCOLS: tuple[ProtocolName, ...] = get_args(ProtocolName)


@dataclass(frozen=True, slots=True)
class RequestHead:
    """The request line and headers as Envoy sent them (names lower-case)."""

    method: str
    path: str
    headers: Mapping[str, str]
    path_only: str = field(init=False, repr=False, compare=False)
    """``path`` without its query string (computed once: every adapter reads it)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "path_only", self.path.partition("?")[0])

    @property
    def request_id(self) -> str:
        return self.headers.get("x-request-id", "")


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """A request understood well enough to route: protocol, model, version and wishes."""

    protocol: ProtocolName
    model: str
    version: str | None
    head: RequestHead
    body: Mapping[str, Any] | None = None
    capabilities: Requirements = ()
    """What the request needs from a deployment (``x-model-capabilities``, content rules)."""
    source: str = ""
    """How model and version were found, for ``explain`` and logs."""
    model_field: str | None = None
    """JSON Pointer of the model name when it came from the body (for error ``field``)."""
