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

from collections.abc import Mapping
from dataclasses import dataclass

from extproc.control.compile import CompiledRouting
from extproc.control.compile.scheduling import envoy_blocker
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


def plan(compiled: CompiledRouting, snapshot: Snapshot) -> Mapping[str, ModelPlan]:
    """Every registered model's plan."""
    return {m: plan_model(compiled, snapshot, m) for m in sorted(snapshot.models)}
