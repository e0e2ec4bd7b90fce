"""Explaining one routing decision: the request through the real flow, step by step.

The request is turned into the ``ProcessingRequest`` messages Envoy would send and fed
to the same :class:`~extproc.core.flow.RequestFlow` the server runs, in trace mode (it
changes no live state: no in-flight count, no prefix index update). Used by
``model-router explain`` (:mod:`extproc.ops.explain`: a fresh registry, no live
signals) and by a running worker's ``POST /explain`` (its live state and signals).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from extproc.control.compile import CompiledRouting
from extproc.control.xds.plan import request_path
from extproc.core import capabilities
from extproc.core.envoy_wire import processing_messages
from extproc.core.flow import Phase, RequestFlow, RouterState
from extproc.core.rewrite import Rewrite
from extproc.core.scheduling.profile import ScheduleTrace


def explain_state(
    compiled: CompiledRouting,
    state: RouterState,
    registry: dict[str, object],
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | None,
) -> dict[str, Any]:
    """The decision for one request on ``state``, as JSON-ready data; ``registry`` is
    the registry's own description."""
    result = _explain(state, registry, method, path, headers, body)
    if state.snapshot is not None:
        hdrs = {k.lower(): v for k, v in headers}
        if method == "POST":  # as processing_messages sends it
            hdrs.setdefault("content-type", "application/json")
        way, why = request_path(compiled, state.snapshot, method, path, hdrs, body)
        result["envoy"] = {"path": way, "why": why}
    return result


def _rewrite(rw: Rewrite | None) -> dict[str, Any] | None:
    if rw is None:
        return None
    return {
        "set_headers": dict(rw.set_headers),
        "remove_headers": list(rw.remove_headers),
        "body_bytes": len(rw.body) if rw.body is not None else None,
    }


def _deployments(state: RouterState, model: str) -> list[dict[str, Any]]:
    """The model's deployments as the registry sees them, with each endpoint's state."""
    snapshot = state.snapshot
    if snapshot is None or model not in snapshot.models:
        return []
    return [
        {
            "deployment": d.name,
            "version": d.version,
            "capabilities": dict(d.tags),
            "weight": d.weight,
            "enabled": d.enabled,
            "endpoints": [{"address": e.address, "state": "routable"} for e in d.endpoints]
            + [{"address": a, "state": why} for a, why in d.excluded],
        }
        for d in snapshot.models[model].deployments
    ]


def _explain(
    state: RouterState,
    registry: dict[str, object],
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | None,
) -> dict[str, Any]:
    trace = ScheduleTrace()
    flow = RequestFlow(state, trace)
    steps: list[str] = []
    for msg in processing_messages(method, path, headers, body):
        resp = flow.receive(msg)
        kind = msg.WhichOneof("request")
        if resp is None:
            steps.append(f"{kind}: waiting for more body")
        elif resp.HasField("immediate_response"):
            steps.append(f"{kind}: immediate response {resp.immediate_response.status.code}")
        elif resp.HasField("mode_override"):
            steps.append(f"{kind}: routed on headers; body not requested")
        elif flow.phase is Phase.BODY:
            steps.append(f"{kind}: body needed to identify the model")
        else:
            steps.append(f"{kind}: routed")
        if flow.phase is Phase.DONE:
            break
    out = flow.outcome
    result: dict[str, Any] = {"steps": steps}
    if out.request is not None:
        r = out.request
        result["request"] = {
            "protocol": r.protocol,
            "model": r.model,
            "version": r.version,
            "capabilities": capabilities.describe(r.capabilities) or None,
            "identified_by": r.source,
            "body_inspected": out.used_body,
        }
    if out.error is not None:
        e = out.error
        result["outcome"] = "reject"
        result["status"] = e.status
        result["error"] = {"type": e.type, "message": e.message, "field": e.field}
        if e.header is not None:
            result["error"]["header"] = e.header
        rule = getattr(e, "rule", None)
        if rule is not None:
            result["error"]["rule"] = rule
    elif out.decision is not None:
        d = out.decision
        result["outcome"] = "route"
        result["decision"] = {
            "model": d.model,
            "version": d.version,
            "deployment": d.deployment,
            "endpoint": d.endpoints[0],
            "fallbacks": list(d.endpoints[1:]),
            "profile": d.profile,
            "picker": d.picker,
            "candidates": d.candidates,
            "why": d.reason,
        }
    if trace.profile:
        result["scheduling"] = trace.as_dict()
    if out.rule is not None:
        act = out.rule.action
        result["rule"] = {
            "name": out.rule.rule,
            "why": out.rule.why,
            "route": {
                "model": act.model,
                "version": act.version,
                "capabilities": capabilities.describe(act.capabilities) or None,
            },
            "upstream_rewrite": _rewrite(out.rewrite),
        }
    if out.checks:
        result["spec_checks"] = out.checks
    result["registry"] = registry
    if out.request is not None:
        result["deployments"] = _deployments(state, out.request.model)
    return result
