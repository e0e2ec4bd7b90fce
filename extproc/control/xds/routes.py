"""RDS: the routes Envoy matches, generated from the compiled routing file and a snapshot.

In order (first match wins):

1. ``picked``: the router decided (``x-model-router-cluster`` set by ext_proc, route
   cache cleared): the deployment's cluster, whose ``override_host`` policy takes the
   router's endpoint list.
2. KServe paths, per model: native routes (ext_proc off) for native models, guarded so
   only requests the router would route unchanged match; then the model's *fail-open*
   routes (ext_proc on): the initial route of every request the router handles, used
   as such only when the router did not answer and ``failure_mode`` is open, so the
   request still reaches its own model (marked ``x-model-router-fail-open: 1``).
   Then a catch-all for every other ``/v2`` path (server health and metadata, which
   the router answers; unknown models, which it answers 404).
3. OpenAI paths, per model, by the body's ``model`` (``json_to_metadata``, which only
   runs on OpenAI paths); then their catch-all (``GET /v1/models`` is answered there).
4. ``x-model``, per model; then the catch-all.

The catch-alls are 503 direct responses that ext_proc runs in front of: the router
either answers (routing re-matches ``picked``, an answer of its own, or an error) or is
unavailable. Every error body takes the shape of the path's protocol
(:mod:`extproc.core.error_shapes`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2  # noqa: F401
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2  # noqa: F401
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from google.protobuf import json_format

from extproc.control.schema import Config
from extproc.control.xds.clusters import METADATA_NAMESPACE
from extproc.control.xds.plan import ModelPlan
from extproc.core.envoy_wire import (
    BUDGET_RISK_HEADER,
    CLUSTER_HEADER,
    DEPLOYMENT_HEADER,
    ENDPOINT_HEADER,
    FAIL_OPEN_HEADER,
    MODEL_HEADER,
    VERSION_HEADER,
    cluster_name,
    error_body,
    error_headers,
)
from extproc.core.errors import (
    NoHealthyDeployment,
    RouterError,
    RouterUnavailable,
    VersionNotFound,
)
from extproc.core.protocols.openai import PATHS_REGEX as OPENAI_PATHS_REGEX
from extproc.core.request import ProtocolName
from extproc.core.snapshot import Deployment, ModelEntry, Snapshot

ROUTE_CONFIG_NAME = "model_router"
J2M_FILTER = "envoy.filters.http.json_to_metadata"
EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"

_EXT_PROC_OFF = {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
    "disabled": True,
}
_EXT_AUTHZ_OFF = {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
    "disabled": True,
}
"""The gateway's ext_authz check runs on native routes only: where ext_proc runs, the
router's flow authenticates (one hop, not two)."""
_FILTER_OFF = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
_ABSENT = {"present_match": True, "invert_match": True}
_CAPS_ABSENT = {"name": "x-model-capabilities", **_ABSENT}
_BODY_GUARDS = [
    {"name": ":method", "string_match": {"exact": "POST"}},
    {
        "name": "content-type",
        "string_match": {
            "safe_regex": {"regex": '(?i)application/json(\\s*;\\s*charset="?utf-?8"?)?\\s*'}
        },
    },
    {"name": "content-encoding", **_ABSENT},
    _CAPS_ABSENT,
]
"""Native routes for body-carrying calls match only what the router would pass unchecked:
POST, JSON in UTF-8, no content coding, no capability requirements."""


def _meta(key: str) -> str:
    """The serving endpoint's metadata: empty (so the header is left out) on a reply no
    upstream made, such as the router's errors on a model's fail-open route."""
    return f"%UPSTREAM_METADATA({METADATA_NAMESPACE}:{key})%"


class RouteBuilder:
    """Builds the route table; one instance per build."""

    def __init__(
        self, config: Config, snapshot: Snapshot, plans: Mapping[str, ModelPlan], retries: int
    ) -> None:
        self.config = config
        self.snapshot = snapshot
        self.plans = plans
        envoy = config.envoy
        self.retry = {
            "retry_on": ",".join(envoy.retry_on),
            "num_retries": max(retries, 1),
            "retry_host_predicate": [
                {
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.retry.host."
                        "previous_hosts.v3.PreviousHostsPredicate"
                    },
                }
            ],
            "host_selection_retry_max_attempts": 3,
        }
        self.auth = config.auth is not None
        self.served_headers = [
            (MODEL_HEADER, _meta("model")),
            (VERSION_HEADER, _meta("version")),
            (DEPLOYMENT_HEADER, _meta("deployment")),
        ]
        if envoy.disclose_endpoint:
            self.served_headers.append((ENDPOINT_HEADER, "%UPSTREAM_HOST%"))

    # -- pieces --------------------------------------------------------------------------

    def _authz_off(self, per_filter: dict[str, Any]) -> None:
        if self.auth:
            per_filter[EXT_AUTHZ_FILTER] = _EXT_AUTHZ_OFF

    def _headers(self, pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        return [
            {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for k, v in pairs
        ]

    def _timed(self, model: str | None) -> dict[str, Any]:
        """A route action's timeouts and retries for ``model`` (None: the defaults).

        ``timeout`` bounds the whole response (streamed generations outlive minutes);
        ``per_try_timeout`` bounds each attempt until the response's headers arrive (probed
        on Envoy 1.40: a stream whose headers came in time runs past it), so a server that
        accepts and never answers gets a 504 after ``first_byte_s``, not ``total_s``."""
        t = self.config.timeouts_of(model)
        return {
            "timeout": _duration(t.total_s),
            "idle_timeout": f"{self.config.envoy.stream_idle_timeout_s}s",
            "retry_policy": {**self.retry, "per_try_timeout": _duration(t.first_byte_s)},
        }

    def _forward(
        self, deps: Sequence[Deployment], weighted: bool, model: str
    ) -> dict[str, Any] | None:
        """A route action over ``deps`` (routable ones, split like the router would);
        ``None`` when none of them has a routable endpoint."""
        action: dict[str, Any] = self._timed(model)
        shares = []
        for d in deps:
            eps = [e for e in d.endpoints if e.weight > 0] if d.routable else []
            share = sum(e.weight for e in eps) if weighted else len(eps)
            if share > 0:
                shares.append((cluster_name(d.name), share))
        if not shares:
            return None
        if len(shares) == 1:
            action["cluster"] = shares[0][0]
        else:
            action["weighted_clusters"] = {
                "clusters": [{"name": n, "weight": w} for n, w in shares]
            }
        return action

    def _route(
        self,
        name: str,
        match: dict[str, Any],
        deps: Sequence[Deployment],
        plan: ModelPlan,
        *,
        native: bool,
        protocol: ProtocolName,
        j2m: bool = False,
    ) -> dict[str, Any]:
        """A route to ``deps``: native (ext_proc off) or fail-open (ext_proc on, marked)."""
        action = self._forward(deps, plan.weighted, plan.model)
        if action is None:
            err = NoHealthyDeployment(f"no routable deployment for model {plan.model!r}")
            return self._error(name, match, err, native=native, protocol=protocol, j2m=j2m)
        per_filter: dict[str, Any] = {} if j2m else {J2M_FILTER: _FILTER_OFF}
        route: dict[str, Any] = {"name": name, "match": match, "route": action}
        headers = list(self.served_headers)
        if native:
            per_filter[EXT_PROC_FILTER] = _EXT_PROC_OFF
        else:
            headers.append((FAIL_OPEN_HEADER, _meta("upstream")))  # "1" when it was used
            self._authz_off(per_filter)
        route["response_headers_to_add"] = self._headers(headers)
        route["request_headers_to_remove"] = [CLUSTER_HEADER]
        route["typed_per_filter_config"] = per_filter
        return route

    def _error(
        self,
        name: str,
        match: dict[str, Any],
        err: RouterError,
        *,
        native: bool,
        protocol: ProtocolName,
        j2m: bool,
    ) -> dict[str, Any]:
        """A direct response with ``err`` in ``protocol``'s error shape (ext_proc off when
        ``native``: Envoy answers it alone)."""
        per_filter: dict[str, Any] = {} if j2m else {J2M_FILTER: _FILTER_OFF}
        if native:
            per_filter[EXT_PROC_FILTER] = _EXT_PROC_OFF
        else:
            self._authz_off(per_filter)
        return {
            "name": name,
            "match": match,
            "direct_response": {
                "status": err.status,
                "body": {"inline_string": error_body(err, protocol).decode()},
            },
            "response_headers_to_add": self._headers(error_headers(err)),
            "typed_per_filter_config": per_filter,
        }

    def _catch_all(
        self, name: str, match: dict[str, Any], *, protocol: ProtocolName, j2m: bool
    ) -> dict[str, Any]:
        """ext_proc runs in front of it; its 503 is what is left when the router did not
        answer (fail-open, router down) and no model route matched."""
        err = RouterUnavailable("model router unavailable and no fallback route matches")
        return self._error(name, match, err, native=False, protocol=protocol, j2m=j2m)

    # -- per identification ------------------------------------------------------------

    def _versions(
        self,
        prefix: str,
        model: ModelEntry,
        plan: ModelPlan,
        base: dict[str, Any],
        *,
        native: bool,
        protocol: ProtocolName,
        j2m: bool = False,
    ) -> list[dict[str, Any]]:
        """``x-model-version: V`` -> V's deployments; another version -> 404 (native only);
        none -> all deployments."""
        out = []
        guards = list(base.get("headers", []))
        kw: dict[str, Any] = {"native": native, "protocol": protocol, "j2m": j2m}
        for v in model.versions:
            deps = [d for d in model.deployments if d.version == v]
            match = {**base, "headers": [*guards, _version_is(v)]}
            out.append(self._route(f"{prefix}@{v}", match, deps, plan, **kw))
        if native:
            match = {
                **base,
                "headers": [*guards, {"name": "x-model-version", "present_match": True}],
            }
            err = VersionNotFound(
                f"model {model.name!r} has no such version "
                f"(registered: {', '.join(model.versions)})"
            )
            out.append(self._error(f"{prefix}@unknown", match, err, **kw))
        out.append(self._route(prefix, base, model.deployments, plan, **kw))
        return out

    def kserve(self, model: ModelEntry, plan: ModelPlan) -> list[dict[str, Any]]:
        m = model.name
        out = []
        if plan.native:
            infer: dict[str, Any] = {"headers": _BODY_GUARDS}
            for v in model.versions:
                deps = [d for d in model.deployments if d.version == v]
                match = {"path": f"/v2/models/{m}/versions/{v}/infer", **infer}
                out.append(
                    self._route(
                        f"native/kserve/{m}/versions/{v}", match, deps, plan, native=True,
                        protocol="kserve_v2",
                    )
                )  # fmt: skip
            pattern = f"^/v2/models/{_re2(m)}/versions/[^/]+/infer$"
            err = VersionNotFound(
                f"model {m!r} has no such version (registered: {', '.join(model.versions)})"
            )
            match = {"safe_regex": {"regex": pattern}, **infer}
            out.append(
                self._error(
                    f"native/kserve/{m}/versions/unknown", match, err, native=True,
                    protocol="kserve_v2", j2m=False,
                )
            )  # fmt: skip
            base = {"path": f"/v2/models/{m}/infer", **infer}
            out += self._versions(
                f"native/kserve/{m}", model, plan, base, native=True, protocol="kserve_v2"
            )
        for v in model.versions:
            deps = [d for d in model.deployments if d.version == v]
            match = {"path_separated_prefix": f"/v2/models/{m}/versions/{v}"}
            out.append(
                self._route(
                    f"fail-open/kserve/{m}/versions/{v}", match, deps, plan, native=False,
                    protocol="kserve_v2",
                )
            )  # fmt: skip
        base = {"path_separated_prefix": f"/v2/models/{m}"}
        return out + self._versions(
            f"fail-open/kserve/{m}", model, plan, base, native=False, protocol="kserve_v2"
        )

    def openai(self, model: ModelEntry, plan: ModelPlan) -> list[dict[str, Any]]:
        by_model = {
            "filter": "envoy.filters.http.json_to_metadata",
            "path": [{"key": "model"}],
            "value": {"string_match": {"exact": model.name}},
        }
        out = []
        name = f"openai/{model.name}"
        if plan.native_openai:
            base = {"prefix": "/v1/", "dynamic_metadata": [by_model], "headers": _BODY_GUARDS}
            out += self._versions(
                f"native/{name}", model, plan, base, native=True, protocol="openai", j2m=True
            )
        base = {"prefix": "/v1/", "dynamic_metadata": [by_model]}
        return out + self._versions(
            f"fail-open/{name}", model, plan, base, native=False, protocol="openai", j2m=True
        )

    def x_model(self, model: ModelEntry, plan: ModelPlan) -> list[dict[str, Any]]:
        header = {"name": "x-model", "string_match": {"exact": model.name}}
        out = []
        if plan.native:
            base = {"prefix": "/", "headers": [header, _CAPS_ABSENT]}
            out += self._versions(
                f"native/x-model/{model.name}", model, plan, base, native=True, protocol="generic"
            )
        base = {"prefix": "/", "headers": [header]}
        return out + self._versions(f"fail-open/x-model/{model.name}", model, plan, base,
                                    native=False, protocol="generic")  # fmt: skip

    def _picked_headers(self) -> list[dict[str, Any]]:
        """What a routed response carries: model, version, deployment (endpoint when
        disclosed), and admission's verdict when it routed past the latency budget."""
        return [
            *self._headers(self.served_headers),
            {
                "header": {"key": BUDGET_RISK_HEADER, "value": f"%REQ({BUDGET_RISK_HEADER})%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                "keep_empty_value": False,
            },
        ]

    def picked(self, models: Sequence[ModelEntry]) -> list[dict[str, Any]]:
        """The router decided (``x-model-router-cluster`` set, route cache cleared): one
        route per deployment, with its model's timeouts; then any cluster the header names
        (a deployment this table does not know yet), with the default timeouts."""
        out: list[dict[str, Any]] = []
        for m in models:
            for d in m.deployments:
                name = cluster_name(d.name)
                header: dict[str, Any] = {"name": CLUSTER_HEADER, "string_match": {"exact": name}}
                out.append(
                    {
                        "name": f"picked/{d.name}",
                        "match": {"prefix": "/", "headers": [header]},
                        "route": {"cluster": name, **self._timed(m.name)},
                        "response_headers_to_add": self._picked_headers(),
                        "request_headers_to_remove": [CLUSTER_HEADER],
                    }
                )
        present: dict[str, Any] = {"name": CLUSTER_HEADER, "present_match": True}
        out.append(
            {
                "name": "picked",
                "match": {"prefix": "/", "headers": [present]},
                "route": {"cluster_header": CLUSTER_HEADER, **self._timed(None)},
                "response_headers_to_add": self._picked_headers(),
                "request_headers_to_remove": [CLUSTER_HEADER],
            }
        )
        return out

    # -- the table -----------------------------------------------------------------------

    def build(self) -> route_pb2.RouteConfiguration:
        # Longer names first: /v2/models/a/b/... must meet model "a/b" before model "a".
        models = sorted(self.snapshot.models.values(), key=lambda m: (-len(m.name), m.name))
        routes = self.picked(models)
        for m in models:
            routes += self.kserve(m, self.plans[m.name])
        kserve_paths = {"path_separated_prefix": "/v2"}
        routes.append(
            self._catch_all("kserve-unknown", kserve_paths, protocol="kserve_v2", j2m=False)
        )
        for m in models:
            routes += self.openai(m, self.plans[m.name])
        openai_paths = {"safe_regex": {"regex": OPENAI_PATHS_REGEX}}
        routes.append(self._catch_all("openai-unknown", openai_paths, protocol="openai", j2m=True))
        for m in models:
            routes += self.x_model(m, self.plans[m.name])
        routes.append(self._catch_all("no-route", {"prefix": "/"}, protocol="generic", j2m=False))
        vhost = {
            "name": "all",
            "domains": ["*"],
            # Bodies are buffered whole (ext_proc BUFFERED, json_to_metadata, retries).
            "request_body_buffer_limit": self.config.limits.max_body_bytes,
            "routes": routes,
        }
        spec = {"name": ROUTE_CONFIG_NAME, "virtual_hosts": [vhost]}
        return json_format.ParseDict(spec, route_pb2.RouteConfiguration())


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def _version_is(version: str) -> dict[str, Any]:
    return {"name": "x-model-version", "string_match": {"exact": version}}


def _re2(text: str) -> str:
    """``text`` as an RE2 literal."""
    return "".join(c if c.isalnum() or c == "_" else "\\" + c for c in text)


def build_routes(
    config: Config, snapshot: Snapshot, plans: Mapping[str, ModelPlan], retries: int
) -> route_pb2.RouteConfiguration:
    """The route table; ``retries`` is how many more endpoints Envoy may try."""
    return RouteBuilder(config, snapshot, plans, retries).build()
