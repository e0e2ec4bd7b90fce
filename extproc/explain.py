"""``model-router explain``: one request through the real flow, no network.

The request is turned into the ``ProcessingRequest`` messages Envoy would send
and fed to the same :class:`~extproc.flow.RequestFlow` the server runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoy.config.core.v3 import base_pb2 as core
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from extproc import capabilities
from extproc.config import Config
from extproc.flow import Phase, RequestFlow, RouterState
from extproc.policies.scheduler import Scheduler
from extproc.registry import make_registry
from extproc.rewrite import Rewrite


def processing_messages(
    method: str, path: str, headers: Sequence[tuple[str, str]], body: bytes | None
) -> list[ep.ProcessingRequest]:
    """The messages Envoy sends for this request in BUFFERED body mode."""
    names = {k.lower() for k, _ in headers}
    hv = [(":method", method), (":path", path), (":authority", "model-router.local")]
    hv += [(k.lower(), v) for k, v in headers]
    if method == "POST" and "content-type" not in names:
        hv.append(("content-type", "application/json"))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        hv.append(("content-length", str(len(body))))
    head = ep.ProcessingRequest(
        request_headers=ep.HttpHeaders(
            headers=core.HeaderMap(
                headers=[core.HeaderValue(key=k, raw_value=v.encode()) for k, v in hv]
            ),
            end_of_stream=not body,
        )
    )
    msgs = [head]
    if body:
        msgs.append(ep.ProcessingRequest(request_body=ep.HttpBody(body=body, end_of_stream=True)))
    return msgs


async def explain_request(
    config: Config,
    source: str,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | None,
) -> dict[str, Any]:
    registry = make_registry(config, source)  # Consul: one sync, then stopped
    await registry.start()
    try:
        return _explain(
            RouterState(config, registry, Scheduler(config)), method, path, headers, body
        )
    finally:
        await registry.stop()


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
    if not state.registry.ready or model not in state.registry.snapshot.models:
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
        for d in state.registry.snapshot.models[model].deployments
    ]


def _explain(
    state: RouterState,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | None,
) -> dict[str, Any]:
    flow = RequestFlow(state)
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
            "picker": d.picker,
            "candidates": d.candidates,
            "why": d.reason,
        }
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
    result["registry"] = state.registry.describe()
    if out.request is not None:
        result["deployments"] = _deployments(state, out.request.model)
    return result
