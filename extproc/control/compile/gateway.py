"""The gateway sections of a routing file (and its keys file) compiled for the hot path
(:mod:`extproc.core.gateway`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from extproc.control.gateway.keys import key_table, read_keys
from extproc.control.gateway.schema import QuotaLimitsConfig
from extproc.control.schema import Config, FailureMode
from extproc.core.gateway.credentials import (
    OTHER_LABEL,
    OTHER_TENANTS,
    ApiKey,
    Authenticator,
    TenantPolicy,
)
from extproc.core.gateway.quota import Limits, TenantQuotas


@dataclass(frozen=True, slots=True)
class CompiledGateway:
    auth: Authenticator
    quotas: Mapping[str, TenantQuotas]
    watched: tuple[Path, ...]
    """Files a change of which reloads the routing file (the keys file)."""
    jwks: Path | None

    def __repr__(self) -> str:
        return f"CompiledGateway({self.auth!r}, quotas={sorted(self.quotas)})"


def _limits(cfg: QuotaLimitsConfig) -> Limits:
    return Limits(cfg.requests_per_minute, cfg.tokens_per_minute, cfg.concurrent_requests)


def _check_jwks(path: Path) -> list[str]:
    where = f"auth.jwt.jwks_file ({path})"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return [f"{where}: cannot read: {exc.strerror or exc}"]
    except (ValueError, UnicodeDecodeError) as exc:
        return [f"{where}: not JSON: {exc}"]
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        return [f"{where}: a JWKS is an object with a non-empty 'keys' list"]
    return []


def compile_gateway(config: Config, base: Path) -> tuple[CompiledGateway | None, list[str]]:
    """The routing file's gateway for the hot path (``None`` without ``auth``), and every
    problem found in it and in the keys file."""
    problems: list[str] = []
    auth = config.auth
    if auth is None:
        if config.tenants:
            problems.append("tenants: tenants need auth (keys_file or jwt) to be identified")
        return None, problems
    if config.failure_mode is FailureMode.OPEN:
        problems.append(
            "auth: needs failure_mode: closed: only the router can check an API key, so "
            "with failure_mode: open a request would pass unauthenticated while it is down"
        )
    classes = set(config.admission.classes)
    static = config.registry.type == "static"
    known_models = set(config.models)

    def check_models(where: str, models: tuple[str, ...] | None) -> None:
        unknown = sorted(set(models or ()) - known_models) if static else []
        if unknown:
            problems.append(f"{where}: undeclared model(s) {', '.join(unknown)}")

    def check_class(where: str, name: str | None) -> None:
        if name is not None and name not in classes:
            problems.append(
                f"{where}: {name!r} is not a priority class ({', '.join(sorted(classes))})"
            )

    tenants: dict[str, TenantPolicy] = {}
    quotas: dict[str, TenantQuotas] = {}
    for name, t in config.tenants.items():
        check_models(f"tenants.{name}.models", t.models)
        check_models(f"tenants.{name}.model_quotas", tuple(t.model_quotas))
        check_class(f"tenants.{name}.default_class", t.default_class)
        label = OTHER_LABEL if name == OTHER_TENANTS else name
        models = frozenset(t.models) if t.models is not None else None
        tenants[name] = TenantPolicy(name, label, models, t.default_class)
        per_model = {m: _limits(q) for m, q in t.model_quotas.items()}
        if any(True for _ in _limits(t.quotas).items()) or per_model:
            quotas[name] = TenantQuotas(_limits(t.quotas), per_model)
    keys_table: Mapping[bytes, ApiKey] = {}
    watched: list[Path] = []
    if auth.keys_file is not None:
        path = base / auth.keys_file
        watched.append(path)
        keys, found = read_keys(path)
        problems += found
        for i, k in enumerate(keys):
            where = f"auth.keys_file ({path}): keys.{i}"
            if k.tenant not in tenants and OTHER_TENANTS not in tenants:
                problems.append(f"{where}.tenant: {k.tenant!r} is not a tenant of the routing file")
            check_models(f"{where}.models", tuple(k.models or ()))
            check_class(f"{where}.default_class", k.default_class)
        keys_table = key_table(keys)
    jwks = None
    if auth.jwt is not None:
        jwks = (base / auth.jwt.jwks_file).resolve()
        problems += _check_jwks(jwks)
    authenticator = Authenticator(
        keys_table,
        tenants,
        tenant_claim=auth.jwt.tenant_claim if auth.jwt is not None else None,
        realm=auth.realm,
    )
    return CompiledGateway(authenticator, quotas, tuple(watched), jwks), problems
