"""Which models Envoy routes natively (no ext_proc hop), and why or why not.

A model is routed natively only where Envoy gives the router's answer: its requests
are identified from the KServe path or ``x-model`` (or, when opted in with
``native: true``, the OpenAI body's ``model``), no spec check runs on them, no content
rule could apply, and its profile is one Envoy can apply itself (round robin or
weighted, no scorers). Per request, a request still goes to the router when it asks for
capabilities (``x-model-capabilities``) or, on body paths, when its method, media type
or content coding is anything the router would check (see :mod:`.routes`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from extproc.control.compile import CompiledRouting
from extproc.control.compile.scheduling import envoy_blocker
from extproc.core.protocols import error_protocol, kserve_v2, openai
from extproc.core.snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class ModelPlan:
    model: str
    protocol: str
    native: bool
    """Envoy routes this model's KServe-path and ``x-model`` requests itself."""
    native_openai: bool
    """... and its OpenAI-path requests, by the body's ``model`` (opt-in)."""
    weighted: bool
    """Envoy splits by deployment weight (weighted_random); else by endpoint count."""
    why: str

    def as_dict(self) -> dict[str, object]:
        return {"native": self.native, "native_openai": self.native_openai, "why": self.why}


def plan_model(compiled: CompiledRouting, snapshot: Snapshot, model: str) -> ModelPlan:
    entry = snapshot.models[model]
    declared = compiled.config.models.get(model)
    setting = declared.native if declared is not None else "auto"
    protocol = entry.protocol
    profile = compiled.scheduler.profile_for(model)
    weighted = profile.picker.name == "weighted_random"
    blockers: list[str] = []
    spec = entry.spec or (model if model in compiled.specs else None)
    if spec is not None and protocol != "generic":
        blockers.append(f"its requests are checked against spec {spec!r}")
    rules = compiled.ruleset.may_apply(model, protocol)
    if rules:
        blockers.append(f"content rule(s) {', '.join(rules)} may apply")
    blocker = envoy_blocker(profile)
    if blocker is not None:
        blockers.append(blocker)
    quotas = [
        d.name for d in entry.deployments
        if d.max_inflight is not None or d.max_inflight_per_endpoint is not None
    ]  # fmt: skip
    if quotas:
        blockers.append(f"deployment(s) {', '.join(quotas)} have in-flight quotas")
    if declared is not None and declared.objective is not None:
        blockers.append("it has a latency objective (admission)")
    if protocol == "openai" and _token_quotas(compiled):
        blockers.append("tenants have token quotas (the router reads the prompt)")
    if setting is False:
        return ModelPlan(model, protocol, False, False, weighted, "native: false")
    if blockers:
        return ModelPlan(model, protocol, False, False, weighted, "; ".join(blockers))
    if setting is True:
        why = "native: true" + (
            " (OpenAI bodies are not checked by the router)" if protocol == "openai" else ""
        )
        return ModelPlan(model, protocol, True, True, weighted, why)
    if protocol == "openai":
        why = "OpenAI models go through the router by default (strict body checks); "
        return ModelPlan(model, protocol, False, False, weighted, why + "set native: true")
    why = "no spec, no content rule and a profile Envoy can apply"
    return ModelPlan(model, protocol, True, False, weighted, why)


def _token_quotas(compiled: CompiledRouting) -> bool:
    gateway = compiled.gateway
    return gateway is not None and any(
        q.tenant.tokens_per_minute is not None
        or any(m.tokens_per_minute is not None for m in q.models.values())
        for q in gateway.quotas.values()
    )


def plan(compiled: CompiledRouting, snapshot: Snapshot) -> Mapping[str, ModelPlan]:
    """Every registered model's plan."""
    return {m: plan_model(compiled, snapshot, m) for m in sorted(snapshot.models)}


_JSON_MEDIA = re.compile(r'(?i)application/json(\s*;\s*charset="?utf-?8"?)?\s*')


def request_path(
    compiled: CompiledRouting,
    snapshot: Snapshot,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes | None,
) -> tuple[str, str]:
    """``("native" | "ext_proc", why)``: how Envoy routes this request, decided as the
    routes in :mod:`.routes` decide it (``model-router explain``). Independent of what
    the router would answer: a native route skips the router's checks."""
    path_only = path.partition("?")[0]
    server_endpoint = (  # /v1/models, /v2, /v2/health/...
        path_only not in openai.PATHS
        and error_protocol(path_only) != "generic"
        and kserve_v2.match(path_only) is None
    )
    if server_endpoint:
        return "ext_proc", "a server endpoint: the router answers it (or refuses it)"
    if path_only in openai.PATHS:
        how, model = "body model", _body_model(headers, body)
    elif (m := kserve_v2.match(path_only)) is not None:
        how, model = "KServe path", m.name
    else:
        how, model = "x-model", headers.get("x-model")
    if model is None or model not in snapshot.models:
        return "ext_proc", "the model is not identified or not registered: the router answers"
    plan = plan_model(compiled, snapshot, model)
    if not plan.native:
        return "ext_proc", f"model {model!r}: {plan.why}"
    if "x-model-capabilities" in headers:
        return "ext_proc", "x-model-capabilities: only the router matches capabilities"
    if how == "x-model":
        return "native", f"x-model {model!r}: {plan.why}"
    body_checks = (
        method == "POST"
        and _JSON_MEDIA.fullmatch(headers.get("content-type", "")) is not None
        and "content-encoding" not in headers
    )
    if how == "body model" and not plan.native_openai:
        return "ext_proc", f"model {model!r}: OpenAI bodies are checked by the router"
    if how == "KServe path":
        infer = [f"/v2/models/{model}/infer"]
        infer += [f"/v2/models/{model}/versions/{v}/infer" for v in snapshot.models[model].versions]
        if path_only not in infer and not _is_unknown_version(path_only, model):
            return "ext_proc", "KServe health and metadata calls go through the router"
    if not body_checks:
        return "ext_proc", "not a plain JSON POST: the router checks method and media type"
    return "native", f"{how} {model!r}: {plan.why}"


def _is_unknown_version(path: str, model: str) -> bool:
    prefix = f"/v2/models/{model}/versions/"
    return (
        path.startswith(prefix)
        and path.endswith("/infer")
        and path.count("/") == 6 + model.count("/")
    )


def _body_model(headers: Mapping[str, str], body: bytes | None) -> str | None:
    """The body's ``model`` as Envoy's json_to_metadata reads it (JSON bodies only)."""
    if body is None or _JSON_MEDIA.fullmatch(headers.get("content-type", "")) is None:
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested past Python's recursion limit
        return None
    model = doc.get("model") if isinstance(doc, dict) else None
    return (
        str(model) if isinstance(model, str | int | float) and not isinstance(model, bool) else None
    )
