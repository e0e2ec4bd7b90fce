"""Who is calling: API keys (stored as SHA-256 digests) and JWT claims Envoy verified.

A request carries an API key in ``x-api-key`` or ``Authorization: Bearer <key>``; the
router hashes it with SHA-256 and looks the digest up in the keys file's table (the
raw key is never stored, logged or counted). A JWT is verified by Envoy's
``jwt_authn`` filter before the router sees the request; the verified payload reaches
the router as dynamic metadata, and the tenant comes from one of its claims.

Nothing here does I/O: the key table and the tenants are compiled by the control plane
(:mod:`extproc.control.gateway`) and swapped in on reload.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extproc.core.errors import ModelNotAllowed, Unauthenticated, shown

API_KEY_HEADER = "x-api-key"
AUTHORIZATION = "authorization"
JWT_NAMESPACE = "envoy.filters.http.jwt_authn"
"""Where Envoy's ``jwt_authn`` filter puts the verified payload (dynamic metadata)."""
JWT_PAYLOAD_KEY = "jwt_payload"
OTHER_TENANTS = "*"
"""The tenant entry for tenants the routing file does not name (JWT claims); their
metric label is :data:`OTHER_LABEL`."""
OTHER_LABEL = "__other__"
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
"""Liveness and readiness probes answer without credentials (orchestrators call them)."""


def key_digest(key: str) -> bytes:
    """The SHA-256 digest the keys file stores for ``key``."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """What a tenant may use: models (``None``: any) and its default priority class."""

    name: str
    label: str
    """The metric label: the tenant's name, or ``__other__`` for undeclared tenants."""
    models: frozenset[str] | None = None
    default_class: str | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One entry of the keys file (no key material beyond its digest)."""

    digest: bytes
    name: str
    """How logs name the key (the keys file's ``name``; never the key itself)."""
    tenant: str
    models: frozenset[str] | None = None
    """Narrows the tenant's models (``None``: the tenant's)."""
    default_class: str | None = None

    def __repr__(self) -> str:
        return f"ApiKey(name={self.name!r}, tenant={self.tenant!r})"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated request's identity."""

    tenant: str
    policy: TenantPolicy
    credential: str
    """``key:<name>`` or ``jwt`` (for logs; never key or token material)."""
    models: frozenset[str] | None
    default_class: str | None

    @property
    def label(self) -> str:
        return self.policy.label

    def check_model(self, model: str) -> None:
        """403 when the key or the tenant may not use ``model``."""
        if self.models is not None and model not in self.models:
            raise ModelNotAllowed(
                f"{self.credential} of tenant {self.tenant!r} may not use model {shown(model)}"
            )


def _narrow(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None:
        return b
    return a if b is None else a & b


def jwt_claims(filter_metadata: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The verified JWT payload in Envoy's metadata (as plain data), if any."""
    ns = filter_metadata.get(JWT_NAMESPACE)
    if not ns:
        return None
    payload = ns.get(JWT_PAYLOAD_KEY)
    return payload if isinstance(payload, Mapping) else None


class Authenticator:
    """API keys by digest, tenants by name, and the JWT claim that names a tenant."""

    __slots__ = ("_callers", "keys", "realm", "tenant_claim", "tenants")

    def __init__(
        self,
        keys: Mapping[bytes, ApiKey],
        tenants: Mapping[str, TenantPolicy],
        *,
        tenant_claim: str | None = None,
        realm: str = "model-router",
    ) -> None:
        self.keys = keys
        self.tenants = tenants
        self.tenant_claim = tenant_claim
        """The JWT claim naming the tenant (``None``: JWTs are not accepted)."""
        self.realm = realm
        self._callers: dict[bytes, Caller] = {}
        """Each key's caller, built once (the hot path only hashes and looks up)."""
        for digest, entry in keys.items():
            policy = self.policy(entry.tenant)
            if policy is not None:
                self._callers[digest] = Caller(
                    tenant=entry.tenant,
                    policy=policy,
                    credential=f"API key {entry.name!r}",
                    models=_narrow(policy.models, entry.models),
                    default_class=entry.default_class or policy.default_class,
                )

    def __repr__(self) -> str:
        return (
            f"Authenticator(keys={len(self.keys)}, tenants={sorted(self.tenants)}, "
            f"tenant_claim={self.tenant_claim!r})"
        )

    def _fail(self, message: str, *, sent: bool) -> Unauthenticated:
        return Unauthenticated(message, realm=self.realm, sent=sent)

    def policy(self, tenant: str) -> TenantPolicy | None:
        found = self.tenants.get(tenant)
        if found is not None:
            return found
        other = self.tenants.get(OTHER_TENANTS)
        if other is None:
            return None
        return TenantPolicy(tenant, OTHER_LABEL, other.models, other.default_class)

    def authenticate(
        self, headers: Mapping[str, str], claims: Mapping[str, Any] | None = None
    ) -> Caller:
        """The caller, from a JWT Envoy verified (``claims``) or an API key; 401 else."""
        if claims is not None and self.tenant_claim is not None:
            return self._from_jwt(claims)
        raw = headers.get(API_KEY_HEADER)
        if raw is None:
            auth = headers.get(AUTHORIZATION)
            if auth is None:
                raise self._fail(
                    "no credentials: send an API key in 'Authorization: Bearer <key>' or "
                    "'x-api-key'" + (", or a JWT" if self.tenant_claim else ""),
                    sent=False,
                )
            scheme, _, raw = auth.strip().partition(" ")
            if scheme.lower() != "bearer" or not raw.strip():
                raise self._fail("the Authorization header must be 'Bearer <key>'", sent=True)
        digest = key_digest(raw.strip())
        entry = self.keys.get(digest)
        # The table is keyed by digest; the comparison below is constant-time anyway, so
        # no timing tells how much of a digest matched.
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            raise self._fail("the API key is not valid", sent=True)
        caller = self._callers.get(digest)
        if caller is None:  # the keys file names a tenant the routing file dropped
            raise self._fail("the API key's tenant is not configured", sent=True)
        return caller

    def _from_jwt(self, claims: Mapping[str, Any]) -> Caller:
        assert self.tenant_claim is not None
        tenant = claims.get(self.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise self._fail(f"the JWT has no {self.tenant_claim!r} claim naming a tenant",
                             sent=True)  # fmt: skip
        policy = self.policy(tenant)
        if policy is None:
            raise ModelNotAllowed(f"tenant {shown(tenant)} is not allowed here")
        return Caller(
            tenant=tenant,
            policy=policy,
            credential="JWT",
            models=policy.models,
            default_class=policy.default_class,
        )
