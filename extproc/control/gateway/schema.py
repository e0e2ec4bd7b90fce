"""The routing file's gateway sections: ``auth``, ``tenants`` and ``quotas`` (README
"Gateway"). Plain typed config data; the keys file's own schema is :mod:`.keys`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TENANT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""Tenant names become metric labels and store keys: short, no separators."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class JwtConfig(_Strict):
    """JWTs verified by Envoy's ``jwt_authn`` filter with a local JWKS file."""

    issuer: Annotated[str, Field(min_length=1)]
    audiences: tuple[str, ...] = ()
    """Accepted ``aud`` values (empty: any)."""
    jwks_file: Annotated[str, Field(min_length=1)]
    """The JWKS, relative to the routing file (Envoy reads it at start-up)."""
    clock_skew_s: Annotated[int, Field(ge=0, le=3600)] = 60
    tenant_claim: Annotated[str, Field(min_length=1)] = "tenant"
    """The claim naming the caller's tenant."""


class AuthConfig(_Strict):
    """Authentication before routing, on every path (README "Gateway")."""

    keys_file: str | None = None
    """API keys (SHA-256 digests), relative to the routing file; reloaded with it."""
    jwt: JwtConfig | None = None
    realm: Annotated[str, Field(pattern=r"^[A-Za-z0-9 _.-]{1,64}$")] = "model-router"
    """The ``realm`` of ``WWW-Authenticate`` on a 401."""

    @model_validator(mode="after")
    def _something(self) -> AuthConfig:
        if self.keys_file is None and self.jwt is None:
            raise ValueError("auth: set keys_file, jwt, or both")
        return self


class QuotaLimitsConfig(_Strict):
    requests_per_minute: Annotated[int, Field(ge=1)] | None = None
    tokens_per_minute: Annotated[int, Field(ge=1)] | None = None
    """Prompt tokens (estimated: characters / 4) plus completion tokens (reserved from
    ``max_tokens``, reconciled with the response's ``usage`` when it has one)."""
    concurrent_requests: Annotated[int, Field(ge=1)] | None = None


class TenantConfig(_Strict):
    models: tuple[str, ...] | None = None
    """Models the tenant may use (unset: all); a key may narrow them."""
    default_class: str | None = None
    """Priority class of its requests without a priority header (admission)."""
    quotas: QuotaLimitsConfig = QuotaLimitsConfig()
    """Across all the tenant's models."""
    model_quotas: Mapping[str, QuotaLimitsConfig] = Field(default_factory=dict)
    """Per model, on top of ``quotas``."""


class RedisConfig(_Strict):
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "model-router"
    timeout_ms: Annotated[int, Field(ge=10, le=10000)] = 250
    """One sync round's deadline: a slower Redis counts as down for that round."""
    sync_interval_ms: Annotated[int, Field(ge=10, le=10000)] = 100
    """How often leases are topped up and claims sent (and at once when a lease runs low)."""
    slot_ttl_s: Annotated[float, Field(ge=1, le=3600)] = 10.0
    """A worker's concurrency slots expire this long after its last sync (a dead worker's
    slots return to the others)."""


class QuotasConfig(_Strict):
    store: Literal["local", "redis"] = "local"
    """``local``: in-process, each worker enforces its share of every limit; ``redis``:
    shared by every worker and replica."""
    redis: RedisConfig = RedisConfig()
    on_store_error: Literal["open", "closed"] = "open"
    """Redis unreachable: ``open`` falls back to each worker's share; ``closed`` answers
    503 ``quota_unavailable`` for tenants with quotas."""
    lease_fraction: Annotated[float, Field(gt=0, le=0.5)] = 0.05
    """Each lease from Redis is this share of the limit; a worker may run ahead of its
    lease by one lease at most, so a window overshoots by at most deciders x lease."""


def tenant_names(value: Mapping[str, Any]) -> Mapping[str, Any]:
    bad = [n for n in value if n != "*" and not TENANT_NAME.fullmatch(n)]
    if bad:
        raise ValueError(
            f"tenant name(s) {', '.join(map(repr, bad))}: use letters, digits, '_', '.' and "
            "'-' (at most 64), or '*' for tenants not listed (JWT claims)"
        )
    return value


class GatewaySections(_Strict):
    """Mixed into the routing file's :class:`~extproc.control.schema.Config`."""

    auth: AuthConfig | None = None
    tenants: Mapping[str, TenantConfig] = Field(default_factory=dict)
    quotas: QuotasConfig = QuotasConfig()

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, value: Mapping[str, TenantConfig]) -> Any:
        return tenant_names(value)
