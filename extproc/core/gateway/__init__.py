"""The gateway: who is calling (API keys, JWTs Envoy verified), which models the caller
may use, and the tenant's quotas. The flow (ext_proc routes) and the ext_authz check
(natively routed requests) both run it (README "Gateway")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extproc.core import usage
from extproc.core.gateway.credentials import (
    API_KEY_HEADER,
    AUTHORIZATION,
    JWT_NAMESPACE,
    JWT_PAYLOAD_KEY,
    OPEN_PATHS,
    Authenticator,
    Caller,
)
from extproc.core.gateway.quota import QuotaBook
from extproc.core.protocols import kserve_v2
from extproc.core.request import InferenceRequest, RequestHead

CREDENTIAL_HEADERS = (AUTHORIZATION, API_KEY_HEADER)
"""Removed before the request goes upstream: model servers never see a gateway key."""

__all__ = ["CREDENTIAL_HEADERS", "JWT_NAMESPACE", "JWT_PAYLOAD_KEY", "Caller", "Gateway"]


@dataclass(frozen=True, slots=True)
class Gateway:
    """Authentication and quotas of one routing file (the quota book lives across
    reloads: counts and leases survive them)."""

    auth: Authenticator
    quotas: QuotaBook
    default_completion_tokens: int = 256

    def __repr__(self) -> str:
        return f"Gateway({self.auth!r}, {self.quotas!r})"

    def needs_credentials(self, path_only: str) -> bool:
        return path_only not in OPEN_PATHS

    def caller(self, headers: Mapping[str, str], claims: Mapping[str, Any] | None) -> Caller:
        return self.auth.authenticate(headers, claims)

    def tokens(self, request: InferenceRequest) -> int:
        """Tokens reserved for ``request``: its prompt (characters / 4) and its completion
        limit (or ``default_completion_tokens``). Requests without a text body (KServe
        tensors, generic) count 0 tokens."""
        body = request.body
        if request.protocol != "openai" or body is None:
            return 0
        return usage.prompt_tokens(body) + usage.completion_tokens(
            body, self.default_completion_tokens
        )

    def admit(self, caller: Caller, request: InferenceRequest, request_id: str) -> None:
        """Count ``request`` against ``caller``'s quotas (429 when over one)."""
        self.quotas.admit(caller.tenant, request.model, self.tokens(request), request_id)

    def native_caller(self, head: RequestHead, claims: Mapping[str, Any] | None) -> Caller | None:
        """A natively routed request's caller (Envoy's ext_authz check; 401 without
        valid credentials). ``None``: an open path (health probes)."""
        if not self.needs_credentials(head.path_only):
            return None
        return self.caller(head.headers, claims)

    def admit_native(self, caller: Caller, head: RequestHead) -> None:
        """``caller``'s right to the model of the KServe path or ``x-model`` (403) and the
        tenant's request and concurrency quotas (429; native requests carry no prompt
        the router reads, so they count 0 tokens)."""
        match = kserve_v2.match(head.path_only)
        model = match.name if match is not None else head.headers.get("x-model")
        if model is not None:
            caller.check_model(model)
            self.quotas.admit(caller.tenant, model, 0, head.request_id)
