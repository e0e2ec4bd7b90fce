"""Prometheus collectors, all on an injected ``CollectorRegistry``.

Label values never come from the client: a model label is a registered model
name or ``__unregistered__``, so hostile requests cannot blow up cardinality.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from extproc.core.errors import (
    ModelNotAllowed,
    QuotaExceeded,
    QuotaUnavailable,
    RouterError,
    Shed,
    SpecViolation,
    Unauthenticated,
)
from extproc.core.flow import Outcome
from extproc.core.snapshot import Snapshot

UNREGISTERED = "__unregistered__"
NO_MODEL = "__none__"
NO_TENANT = "__none__"
_GATEWAY_ERRORS = (Unauthenticated, ModelNotAllowed, QuotaExceeded, QuotaUnavailable)

# Router-internal latencies are tens of microseconds to a few milliseconds.
_FAST_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip


class Metrics:
    """Every collector the router exports; label children are cached for the hot path."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        ns = "model_router"
        self.requests = Counter(
            f"{ns}_requests",
            "Requests handled, by model and outcome (routed, answered, rejected, failed, shed).",
            ["model", "outcome"],
            registry=registry,
        )
        self.errors = Counter(
            f"{ns}_errors",
            "Requests answered with an error, by error type and HTTP status.",
            ["type", "status"],
            registry=registry,
        )
        self.validation = Counter(
            f"{ns}_validation_failures",
            "Requests rejected by a model's spec (422), by model and rule.",
            ["model", "rule"],
            registry=registry,
        )
        self.deployment_requests = Counter(
            f"{ns}_deployment_requests",
            "Requests the router routed, by model and the deployment it picked (registry "
            "names: bounded by the registry).",
            ["model", "deployment"],
            registry=registry,
        )
        self.max_inflight = Gauge(
            f"{ns}_deployment_max_inflight",
            "A deployment's quota of requests in flight (deployments with a quota only).",
            ["model", "deployment"],
            registry=registry,
        )
        self.picks = Counter(
            f"{ns}_picks",
            "Requests routed, by the scheduling profile that picked the endpoints.",
            ["profile"],
            registry=registry,
        )
        self.admission = Counter(
            f"{ns}_admission",
            "Admission decisions, by priority class, model and result (admitted, "
            "admitted_at_risk: past the latency budget, shed_load, shed_quota, shed_budget).",
            ["class", "model", "result"],
            registry=registry,
        )
        self.spend = Counter(
            f"{ns}_estimated_spend",
            "Estimated cost of the requests routed, in the routing file's cost unit, by model "
            "and deployment (prompt tokens from characters / 4; completion tokens from the "
            "request's limit or admission.default_completion_tokens).",
            ["model", "deployment"],
            registry=registry,
        )
        self.rules = Counter(
            f"{ns}_rule_matches",
            "Requests a content rule applied to, by rule name.",
            ["rule"],
            registry=registry,
        )
        self.duration = Histogram(
            f"{ns}_request_duration_seconds",
            "Time a request spends in the router: from its headers arriving to the final answer.",
            ["path"],
            buckets=_FAST_BUCKETS,
            registry=registry,
        )
        self.phase = Histogram(
            f"{ns}_phase_duration_seconds",
            "Time per phase: decision (router CPU), body_transfer (headers answered to body "
            "received, Envoy buffering and sending the body), stream (whole ext_proc stream).",
            ["phase"],
            buckets=_FAST_BUCKETS,
            registry=registry,
        )
        self.body_bytes = Histogram(
            f"{ns}_request_body_bytes",
            "Size of request bodies the router had to inspect.",
            buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216),
            registry=registry,
        )
        self.inflight = Gauge(f"{ns}_inflight_streams", "Open ext_proc streams.", registry=registry)
        self.internal_errors = Counter(
            f"{ns}_internal_errors",
            "Unexpected exceptions caught at the per-request boundary.",
            registry=registry,
        )
        self.reloads = Counter(
            f"{ns}_config_reloads",
            "Routing-file reload attempts by result (success, error).",
            ["result"],
            registry=registry,
        )
        self.config_generation = Gauge(
            f"{ns}_config_generation",
            "Generation of the routing snapshot in use.",
            registry=registry,
        )
        self.last_reload = Gauge(
            f"{ns}_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful (re)load of the routing file.",
            registry=registry,
        )
        self.endpoints = Gauge(
            f"{ns}_registry_endpoints",
            "Endpoints in the registry snapshot, by model, version, deployment and state.",
            ["model", "version", "deployment", "state"],
            registry=registry,
        )
        self.staleness = Gauge(
            f"{ns}_registry_staleness_seconds",
            "Seconds since the registry backend (Consul) last answered; 0 for the routing file.",
            registry=registry,
        )
        self.gateway = Counter(
            f"{ns}_gateway_requests",
            "Requests the gateway checked, by path (ext_proc, native: Envoy's ext_authz), "
            "tenant (configured names; __other__: tenants only a JWT names; __none__: not "
            "authenticated) and result (allowed, or the error type: unauthenticated, "
            "model_not_allowed, rate_limit_exceeded, quota_unavailable).",
            ["path", "tenant", "result"],
            registry=registry,
        )
        self.quota_store_up = Gauge(
            f"{ns}_quota_store_up",
            "1 while the shared quota store (Redis) answers (always 1 without one).",
            registry=registry,
        )
        self.quota_store_staleness = Gauge(
            f"{ns}_quota_store_staleness_seconds",
            "Seconds since the quota store last answered while it does not (0 while it does).",
            registry=registry,
        )
        self.quota_store_ops = Gauge(
            f"{ns}_quota_store_operations",
            "Redis commands this worker sent for quotas (script calls, loads, pings).",
            registry=registry,
        )
        self.quota_overdrafts = Gauge(
            f"{ns}_quota_overdrafts",
            "Requests admitted beyond this worker's lease while a refill was on its way.",
            registry=registry,
        )
        self.xds_streams = Gauge(
            f"{ns}_xds_streams", "Open ADS streams (Envoys fetching config).", registry=registry
        )
        self.xds_responses = Counter(
            f"{ns}_xds_responses",
            "xDS responses sent, by type (cds, eds, rds).",
            ["type"],
            registry=registry,
        )
        self.xds_acks = Counter(
            f"{ns}_xds_acks", "xDS responses Envoy accepted, by type.", ["type"], registry=registry
        )
        self.xds_nacks = Counter(
            f"{ns}_xds_nacks",
            "xDS responses Envoy rejected (it keeps its previous config), by type.",
            ["type"],
            registry=registry,
        )
        self.xds_ack_timeouts = Counter(
            f"{ns}_xds_ack_timeouts",
            "New states the router routed on before every Envoy ACKed their clusters "
            "(envoy.xds_ack_timeout_s passed: an Envoy is slow or stuck).",
            registry=registry,
        )
        # process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds...
        # (Linux /proc; nothing is exported where it cannot be read).
        self.process = ProcessCollector(registry=registry)
        self._children: dict[tuple[str, ...], Counter] = {}
        # Known label values exported at 0 from the start, so a rate() or an alert on
        # them has a series before the first event (a NACK, a refused reload).
        for kind in ("cds", "eds", "rds"):
            for metric in (self.xds_responses, self.xds_acks, self.xds_nacks):
                self._child(metric, kind)
        for result in ("success", "error"):
            self.reloads.labels(result)
        self._headers_only = self.duration.labels("headers")
        self._with_body = self.duration.labels("body")
        self._decision = self.phase.labels("decision")
        self._transfer = self.phase.labels("body_transfer")
        self._stream = self.phase.labels("stream")

    def __repr__(self) -> str:
        return f"Metrics(children={len(self._children)})"

    def _child(self, metric: Counter, *labels: str) -> Counter:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(
        self,
        outcome: Outcome,
        *,
        decision_s: float,
        in_router_s: float,
        body_transfer_s: float | None,
    ) -> None:
        err = outcome.error
        if outcome.answered is not None:
            model = outcome.model or NO_MODEL
            result = "answered"
        elif err is None:
            model = outcome.model or NO_MODEL
            result = "shed" if outcome.passed else "routed"
            decision = outcome.decision
            if decision is not None:
                self._child(self.picks, decision.profile).inc()
                self._child(self.deployment_requests, model, decision.deployment).inc()
                if outcome.priority is not None:
                    admitted = "admitted_at_risk" if decision.budget_at_risk else "admitted"
                    self._child(self.admission, outcome.priority, model, admitted).inc()
                if decision.cost:
                    self._child(self.spend, model, decision.deployment).inc(decision.cost)
        else:
            model = outcome.model or UNREGISTERED
            result = "failed" if err.status >= 500 else "rejected"
            self._child(self.errors, err.type, str(err.status)).inc()
            if isinstance(err, SpecViolation):
                self._child(self.validation, model, err.rule).inc()
            elif isinstance(err, Shed) and outcome.priority is not None:
                shed = f"shed_{err.reason}"
                self._child(self.admission, outcome.priority, model, shed).inc()
        self._child(self.requests, model, result).inc()
        if outcome.credential is not None or isinstance(err, _GATEWAY_ERRORS):
            gateway_err = err if isinstance(err, _GATEWAY_ERRORS) else None
            self.observe_gateway("ext_proc", outcome.tenant, gateway_err)
        if outcome.rule is not None:
            self._child(self.rules, outcome.rule.rule).inc()
        self._decision.observe(decision_s)
        if outcome.used_body:
            self._with_body.observe(in_router_s)
            self.body_bytes.observe(outcome.body_bytes)
        else:
            self._headers_only.observe(in_router_s)
        if body_transfer_s is not None:
            self._transfer.observe(body_transfer_s)

    def observe_gateway(self, path: str, tenant: str | None, err: RouterError | None) -> None:
        result = "allowed" if err is None else err.type
        self._child(self.gateway, path, tenant or NO_TENANT, result).inc()

    def observe_stream(self, seconds: float) -> None:
        self._stream.observe(seconds)

    # The xDS server's observer (extproc.control.xds.ads.XdsObserver).
    def streams(self, delta: int) -> None:
        self.xds_streams.inc(delta)

    def sent(self, kind: str) -> None:
        self._child(self.xds_responses, kind).inc()

    def acked(self, kind: str) -> None:
        self._child(self.xds_acks, kind).inc()

    def nacked(self, kind: str) -> None:
        self._child(self.xds_nacks, kind).inc()

    def publish_snapshot(self, snapshot: Snapshot) -> None:
        """Registry gauges for a new snapshot: endpoints by state, quotas, generation, load
        time (label sets of deployments that left the registry go with them)."""
        g = self.endpoints
        g.clear()
        self.max_inflight.clear()
        for model in snapshot.models.values():
            for dep in model.deployments:
                if dep.max_inflight is not None:
                    self.max_inflight.labels(model.name, dep.name).set(dep.max_inflight)
                counts = {"routable" if dep.routable else "disabled": len(dep.endpoints)}
                for _, why in dep.excluded:  # e.g. critical, warning, maintenance (Consul)
                    counts[why] = counts.get(why, 0) + 1
                for state, n in counts.items():
                    g.labels(model.name, dep.version, dep.name, state).set(n)
        self._forget_deployments_not_in(snapshot)
        self.config_generation.set(snapshot.generation)
        self.last_reload.set(time.time())

    def _forget_deployments_not_in(self, snapshot: Snapshot) -> None:
        """Drop the request counters of deployments the registry no longer has, so label
        sets stay bounded by the registry as it is (a deployment that comes back starts
        from 0, which Prometheus' rate() reads as a counter reset)."""
        live = {(m.name, d.name) for m in snapshot.models.values() for d in m.deployments}
        metric = self.deployment_requests
        for key in [k for k in self._children if k[0] == metric._name]:
            if tuple(key[1:]) not in live:
                del self._children[key]
                metric.remove(*key[1:])


ExplainHandler = Callable[[dict[str, Any]], dict[str, Any]]


async def serve_metrics(
    registry: CollectorRegistry,
    host: str,
    port: int,
    *,
    worker: int = 0,
    explain: ExplainHandler | None = None,
) -> tuple[web.AppRunner, int]:
    """``/metrics`` (Prometheus text), ``/healthz`` and, with ``explain``, ``POST /explain``
    (the decision this worker would take, on its live state) on ``host:port``; the runner
    and the port."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "worker": worker})

    async def explain_post(request: web.Request) -> web.Response:
        assert explain is not None
        try:
            payload = await request.json()
            if not isinstance(payload, dict):
                raise ValueError("a JSON object is required")
            return web.json_response(explain(payload))
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad explain request: {exc}"}, status=400)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    if explain is not None:
        app.router.add_post("/explain", explain_post)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    sockets = getattr(site._server, "sockets", None) or []
    return runner, (sockets[0].getsockname()[1] if sockets else port)
