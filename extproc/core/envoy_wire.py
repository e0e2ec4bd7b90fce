"""The Envoy ext_proc wire format: every ProcessingResponse the router sends is built here.

This is the one place that maps domain errors to Envoy ``ImmediateResponse``s (in
the error shape of the request path's protocol, :mod:`extproc.core.error_shapes`),
the router's own answers (server health and metadata, model lists) to 200s, and
routing decisions to header mutations and endpoint-picker metadata. It also builds
the ``ProcessingRequest`` messages Envoy would send for a request
(:func:`processing_messages`), for ``explain`` and the tests.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence

import orjson
from envoy.config.core.v3 import base_pb2 as core
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2

from extproc.core.error_shapes import (
    ERROR_FIELD_HEADER,
    ERROR_HEADER,
    encode_header_value,
    error_document,
)
from extproc.core.errors import QuotaExceeded, RouterError, Shed, Unauthenticated
from extproc.core.request import ProtocolName
from extproc.core.rewrite import Rewrite
from extproc.core.scheduling.scheduler import Decision

# Header and metadata names of the Gateway API Inference Extension endpoint picker protocol.
DESTINATION_HEADER = "x-gateway-destination-endpoint"
LB_NAMESPACE = "envoy.lb"
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
SUBSET_KEY = "x-gateway-destination-endpoint-subset"
# Our own headers, for upstream servers, logs and the client's response.
MODEL_HEADER = "x-model-router-model"
VERSION_HEADER = "x-model-router-version"
DEPLOYMENT_HEADER = "x-model-router-deployment"
CLUSTER_HEADER = "x-model-router-cluster"
"""The Envoy cluster (one per deployment) of the picked endpoints: the ``picked`` route
reads it (``cluster_header``)."""
ENDPOINT_HEADER = "x-model-router-endpoint"
WORKER_HEADER = "x-model-router-worker"
"""Which router worker decided: Envoy sends that request's access-log entry back to it
(the worker's in-flight count is released then)."""
BUDGET_RISK_HEADER = "x-model-router-budget-at-risk"
"""Set to ``1`` when no endpoint was predicted to meet the request's latency budget (the
``picked`` route copies it onto the response)."""
FAIL_OPEN_HEADER = "x-model-router-fail-open"
QUOTA_HEADER = "x-model-router-quota"
"""On a quota's 429: which limit refused the request (``requests_per_minute``...)."""
ANSWER_DETAILS = "model_router_answer"
"""``ImmediateResponse.details`` of the router's own 200 answers (Envoy's local reply
mapping passes every ``model_router_*`` reply through untouched)."""

ROUTING_HEADERS = (
    DESTINATION_HEADER,
    CLUSTER_HEADER,
    WORKER_HEADER,
    MODEL_HEADER,
    VERSION_HEADER,
    DEPLOYMENT_HEADER,
    BUDGET_RISK_HEADER,
)
"""Every header that steers or describes routing; clients' copies are stripped by Envoy."""
ROUTER_HEADER_ROOM = len(ROUTING_HEADERS) + 2
"""Headers a routing answer may add: the routing headers, and a rewrite's
``content-length`` and ``x-model``/``x-model-version``."""

_CLUSTER_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def cluster_name(deployment: str) -> str:
    """The Envoy cluster of a deployment (the xDS server and the router agree on it)."""
    safe = _CLUSTER_UNSAFE.sub("_", deployment)
    if safe != deployment:  # keep distinct deployments distinct after the substitution
        safe += "." + hashlib.sha256(deployment.encode()).hexdigest()[:8]
    return "deployment." + safe


def cluster_stat_name(deployment: str) -> str:
    """The name a deployment's cluster has in Envoy's stats (its ``alt_stat_name``):
    without dots, because Envoy's Prometheus tag ``envoy_cluster_name`` ends at the first
    dot (``deployment.chat`` would be ``envoy_cluster_name="deployment"`` and the rest
    would leak into every metric name)."""
    name = cluster_name(deployment).replace(".", "_")
    if "." in deployment:  # keep "a.b" and "a_b" apart
        name += "_" + hashlib.sha256(deployment.encode()).hexdigest()[:8]
    return name


_OVERWRITE = core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_SKIP_BODY = pm.ProcessingMode(request_body_mode=pm.ProcessingMode.NONE)


def _set(key: str, value: str) -> core.HeaderValueOption:
    return core.HeaderValueOption(
        header=core.HeaderValue(key=key, raw_value=value.encode()), append_action=_OVERWRITE
    )


def _set_value(key: str, value: str) -> core.HeaderValueOption:
    """ext_authz reads ``value`` (``raw_value`` came through empty: probed on 1.40)."""
    return core.HeaderValueOption(
        header=core.HeaderValue(key=key, value=value), append_action=_OVERWRITE
    )


def error_body(err: RouterError, protocol: ProtocolName = "generic") -> bytes:
    """``err`` in the error shape of ``protocol`` (the request path's)."""
    return orjson.dumps(
        error_document(
            protocol,
            status=err.status,
            type=err.type,
            message=err.message,
            field=err.field,
            header=err.header,
        )
    )


def reset_text(seconds: float) -> str:
    """A reset delay as OpenAI writes it in ``x-ratelimit-reset-*``: ``250ms``, ``17s``,
    ``1m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    whole = round(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def error_headers(err: RouterError) -> list[tuple[str, str]]:
    """The headers every error response carries: its type, its field when it has one,
    ``Retry-After`` when admission or a quota shed it, ``WWW-Authenticate`` on a 401 and
    OpenAI's ``x-ratelimit-*`` headers when a tenant's quota refused it."""
    headers = [(ERROR_HEADER, err.type)]
    if err.field is not None:
        headers.append((ERROR_FIELD_HEADER, encode_header_value(err.field)))
    if isinstance(err, Shed) and err.retry_after_s is not None:
        headers.append(("retry-after", str(err.retry_after_s)))
    if isinstance(err, Unauthenticated):
        headers.append(("www-authenticate", err.challenge))
    elif isinstance(err, QuotaExceeded):
        headers.append((QUOTA_HEADER, err.quota))
        for lim in err.limits:
            headers.append((f"x-ratelimit-limit-{lim.kind}", str(lim.limit)))
            headers.append((f"x-ratelimit-remaining-{lim.kind}", str(lim.remaining)))
            headers.append((f"x-ratelimit-reset-{lim.kind}", reset_text(lim.reset_s)))
    return headers


def immediate(err: RouterError, protocol: ProtocolName = "generic") -> ep.ProcessingResponse:
    """The client's answer for ``err``: its status, and its body in ``protocol``'s shape."""
    headers = [_set("content-type", "application/json")]
    headers += [_set(k, v) for k, v in error_headers(err)]
    return ep.ProcessingResponse(
        immediate_response=ep.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=err.status),
            headers=ep.HeaderMutation(set_headers=headers),
            body=error_body(err, protocol),
            details=f"model_router_{err.type}",
        )
    )


def authz_denied(err: RouterError, protocol: ProtocolName = "generic") -> authz.CheckResponse:
    """Envoy's ext_authz answer refusing a natively routed request: the same status,
    headers and body as :func:`immediate` (Envoy's local reply mapping keeps them)."""
    resp = authz.CheckResponse()
    resp.status.code = code_pb2.UNAUTHENTICATED if err.status == 401 else code_pb2.PERMISSION_DENIED
    denied = resp.denied_response
    denied.status.code = err.status
    denied.body = error_body(err, protocol).decode()
    for key, value in [("content-type", "application/json"), *error_headers(err)]:
        denied.headers.append(_set_value(key, value))
    return resp


def authz_allowed(worker: str, strip: tuple[str, ...]) -> authz.CheckResponse:
    """Envoy's ext_authz answer letting a natively routed request through: tagged with
    the deciding worker (its access-log entry comes back to it, which releases the
    tenant's concurrency slot), its credentials removed."""
    resp = authz.CheckResponse()
    resp.status.code = code_pb2.OK
    ok = resp.ok_response
    if worker:
        ok.headers.append(_set_value(WORKER_HEADER, worker))
    ok.headers_to_remove.extend(strip)
    return resp


def answer(body: bytes) -> ep.ProcessingResponse:
    """A 200 JSON answer the router gives itself (health, server metadata, model lists)."""
    return ep.ProcessingResponse(
        immediate_response=ep.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=200),
            headers=ep.HeaderMutation(set_headers=[_set("content-type", "application/json")]),
            body=body,
            details=ANSWER_DETAILS,
        )
    )


def _fill(
    common: ep.CommonResponse,
    md: struct_pb2.Struct,
    decision: Decision,
    rewrite: Rewrite | None = None,
    worker: str = "",
    strip: tuple[str, ...] = (),
) -> None:
    # Built by mutation, not nested constructors: upb copies every nested message
    # passed as a keyword, which made this 4x slower on the hot path.
    # Header and metadata carry the same list, primary first (endpoint picker protocol):
    # the picked route sends the request to the deployment's cluster, whose override_host
    # policy takes the first host and walks the rest on retry (hosts of other
    # deployments are skipped), then falls back to its own load balancer.
    add = common.header_mutation.set_headers.add
    endpoints = ",".join(decision.endpoints)
    for key, value in (
        (DESTINATION_HEADER, endpoints),
        (CLUSTER_HEADER, cluster_name(decision.deployment)),
        (MODEL_HEADER, decision.model),
        (VERSION_HEADER, decision.version),
        (DEPLOYMENT_HEADER, decision.deployment),
    ):
        opt = add()
        opt.header.key = key
        opt.header.raw_value = value.encode()
        opt.append_action = _OVERWRITE
    if worker:
        opt = add()
        opt.header.key = WORKER_HEADER
        opt.header.raw_value = worker.encode()
        opt.append_action = _OVERWRITE
    if decision.budget_at_risk:
        opt = add()
        opt.header.key = BUDGET_RISK_HEADER
        opt.header.raw_value = b"1"
        opt.append_action = _OVERWRITE
    if strip:  # the caller's credentials stay at the gateway
        common.header_mutation.remove_headers.extend(strip)
    if rewrite is not None:
        for key, value in rewrite.set_headers:
            opt = add()
            opt.header.key = key
            opt.header.raw_value = value.encode()
            opt.append_action = _OVERWRITE
        common.header_mutation.remove_headers.extend(rewrite.remove_headers)
        if rewrite.body is not None:
            common.body_mutation.body = rewrite.body
    common.clear_route_cache = True
    md.fields[LB_NAMESPACE].struct_value.fields[DESTINATION_HEADER].string_value = endpoints


def route_on_headers(
    decision: Decision, rewrite: Rewrite | None = None, worker: str = "",
    strip: tuple[str, ...] = (),
) -> ep.ProcessingResponse:  # fmt: skip
    """Answer to request headers: route now and tell Envoy not to send the body."""
    resp = ep.ProcessingResponse()
    _fill(resp.request_headers.response, resp.dynamic_metadata, decision, rewrite, worker, strip)
    resp.mode_override.CopyFrom(_SKIP_BODY)
    return resp


def route_on_body(
    decision: Decision, rewrite: Rewrite | None = None, worker: str = "",
    strip: tuple[str, ...] = (),
) -> ep.ProcessingResponse:  # fmt: skip
    """Answer to a buffered request body: the headers (and body) are still mutable then."""
    resp = ep.ProcessingResponse()
    _fill(resp.request_body.response, resp.dynamic_metadata, decision, rewrite, worker, strip)
    return resp


class ResponseCache:
    """Routing answers, built once per distinct decision and then reused.

    A decision's answer depends only on its endpoints, model, version and
    deployment, and a pool has few distinct orderings, so the same few messages
    recur; building one costs about 5 us of upb calls per request. The cached
    messages are shared: nothing may mutate a response after the flow returns it
    (the pump only serializes it). Answers with a rewrite are built every time.
    One instance lives in each :class:`~extproc.core.flow.RouterState`, so a reload
    starts empty; ``limit`` bounds the memory when pools churn (Consul).
    """

    __slots__ = ("_body", "_headers", "limit", "strip", "worker")

    def __init__(self, limit: int = 1024, worker: str = "", strip: tuple[str, ...] = ()) -> None:
        self.limit = limit
        self.worker = worker
        self.strip = strip
        """Request headers every routed request loses (the gateway's credentials)."""
        self._headers: dict[tuple[str, ...], ep.ProcessingResponse] = {}
        self._body: dict[tuple[str, ...], ep.ProcessingResponse] = {}

    def __repr__(self) -> str:
        return (
            f"ResponseCache(headers={len(self._headers)}, body={len(self._body)}, "
            f"limit={self.limit})"
        )

    @staticmethod
    def _key(decision: Decision) -> tuple[str, ...]:
        risk = "!" if decision.budget_at_risk else ""
        return (decision.model, decision.version, decision.deployment + risk, *decision.endpoints)

    def on_headers(
        self, decision: Decision, rewrite: Rewrite | None = None
    ) -> ep.ProcessingResponse:
        if rewrite is not None:
            return route_on_headers(decision, rewrite, self.worker, self.strip)
        return self._get(self._headers, decision, route_on_headers)

    def on_body(self, decision: Decision, rewrite: Rewrite | None = None) -> ep.ProcessingResponse:
        if rewrite is not None:
            return route_on_body(decision, rewrite, self.worker, self.strip)
        return self._get(self._body, decision, route_on_body)

    def _get(
        self,
        cache: dict[tuple[str, ...], ep.ProcessingResponse],
        decision: Decision,
        build: Callable[[Decision, Rewrite | None, str, tuple[str, ...]], ep.ProcessingResponse],
    ) -> ep.ProcessingResponse:
        key = self._key(decision)
        resp = cache.get(key)
        if resp is None:
            if len(cache) >= self.limit:
                cache.clear()
            resp = cache[key] = build(decision, None, self.worker, self.strip)
        return resp


def continue_headers() -> ep.ProcessingResponse:
    """Let the headers through unchanged; Envoy sends the buffered body next."""
    return ep.ProcessingResponse(request_headers=ep.HeadersResponse())


def continue_unchecked() -> ep.ProcessingResponse:
    """Let the request continue on the route it matched, without sending the body here
    (``failure_mode: open``: its own model's fail-open route, marked as such)."""
    resp = ep.ProcessingResponse(request_headers=ep.HeadersResponse())
    resp.mode_override.CopyFrom(_SKIP_BODY)
    return resp


def passthrough(kind: str) -> ep.ProcessingResponse:
    """An unchanged answer for a message kind the router does not act on."""
    if kind == "request_trailers":
        return ep.ProcessingResponse(request_trailers=ep.TrailersResponse())
    if kind == "response_trailers":
        return ep.ProcessingResponse(response_trailers=ep.TrailersResponse())
    if kind == "response_body":
        return ep.ProcessingResponse(response_body=ep.BodyResponse())
    if kind == "request_body":
        return ep.ProcessingResponse(request_body=ep.BodyResponse())
    if kind == "request_headers":
        return ep.ProcessingResponse(request_headers=ep.HeadersResponse())
    return ep.ProcessingResponse(response_headers=ep.HeadersResponse())


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
