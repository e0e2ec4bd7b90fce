"""Render Envoy's bootstrap from the shipped template and a routing file.

``envoy/envoy.yaml`` in the repository is exactly this rendering of
``examples/routes.yaml`` (a test keeps them equal), so what ``model-router up``
runs and what platform teams adapt are the same file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from string import Template

from extproc.control.net import is_ip
from extproc.control.schema import Config, DeploymentConfig, FailureMode
from extproc.core.envoy_wire import ROUTING_HEADERS


@dataclass(frozen=True, slots=True)
class EnvoyPorts:
    """Where the rendered Envoy listens and where it finds the router workers."""

    listen_port: int
    admin_port: int
    ext_proc_ports: tuple[int, ...]
    ext_proc_host: str = "127.0.0.1"
    listen_host: str = "127.0.0.1"
    admin_host: str = "127.0.0.1"

    @classmethod
    def from_config(cls, config: Config) -> EnvoyPorts:
        return cls(
            listen_port=config.envoy.listen_port,
            admin_port=config.envoy.admin_port,
            ext_proc_ports=tuple(config.worker_ports()),
            ext_proc_host=config.listener.host,
            listen_host=config.envoy.listen_host,
        )


def template_text() -> str:
    return resources.files("extproc.ops").joinpath("templates/envoy.yaml.tmpl").read_text()


def _q(value: str) -> str:
    """A YAML-safe double-quoted scalar."""
    return json.dumps(value)


def _socket(host: str, port: int) -> str:
    return f"{{address: {{socket_address: {{address: {_q(host)}, port_value: {port}}}}}}}"


def _cluster_name(index: int, model: str) -> str:
    return f"fallback_{index}_{re.sub(r'[^A-Za-z0-9_.-]', '_', model)}"


def _fallback_cluster(name: str, model: str, deps: list[DeploymentConfig]) -> str:
    eps = [(ep, d.weight) for d in deps for ep in d.endpoints]
    static = all(is_ip(ep.host) for ep, _ in eps)
    lines = [
        f"  # Fail-open fallback for model {_q(model)}: all of its enabled deployments.",
        f"  - name: {name}",
        f"    type: {'STATIC' if static else 'STRICT_DNS'}",
        "    connect_timeout: 2s",
        "    lb_policy: ROUND_ROBIN",
        "    circuit_breakers:",
        "      thresholds:",
        "      - {max_connections: 100000, max_pending_requests: 100000,"
        " max_requests: 100000, max_retries: 1000}",
        "    load_assignment:",
        f"      cluster_name: {name}",
        "      endpoints:",
        "      - lb_endpoints:",
    ]
    for ep, weight in eps:
        lines.append(
            f"        - endpoint: {_socket(ep.host, ep.port)}\n"
            f"          load_balancing_weight: {max(weight, 1)}"
        )
    return "\n".join(lines) + "\n\n"


def _route(name: str, match: str, cluster: str, cfg: Config) -> str:
    t = f"{cfg.envoy.route_timeout_s}s"
    idle = f"{cfg.envoy.stream_idle_timeout_s}s"
    return (
        f"              - name: {_q(name)}\n"
        f"                match: {match}\n"
        f"                route: {{cluster: {cluster}, timeout: {t}, idle_timeout: {idle}}}\n"
    )


def fallback_blocks(config: Config) -> tuple[str, str]:
    """Routes and clusters used when the router is down and failure mode is open."""
    if config.failure_mode is not FailureMode.OPEN:
        note = (
            "              # (failure_mode: closed in the routing file, so no fail-open\n"
            "              #  fallback routes: a router outage answers 503 JSON.)\n"
        )
        return note, ""
    clusters: dict[str, str] = {}
    cluster_text: list[str] = []
    for i, (model, _) in enumerate(config.models.items()):
        deps = [d for d in config.deployments_of(model) if d.enabled and d.weight > 0]
        if deps:
            name = _cluster_name(i, model)
            clusters[model] = name
            cluster_text.append(_fallback_cluster(name, model, deps))
    routes = [
        "              # ---- Fail-open fallbacks: used only when the router did not answer\n"
        "              #      (failure_mode_allow: true), so no endpoint header is set.\n"
        "              #      Envoy cannot read the body: KServe paths and x-model decide,\n"
        "              #      OpenAI paths go to the routing file's fail_open defaults. ----\n"
    ]
    for model, cluster in clusters.items():
        if config.models[model].protocol == "kserve_v2":
            regex = f"^/v2/models/{re.escape(model)}(/versions/[^/]+)?(/infer|/ready)?$"
            match = f"{{safe_regex: {{regex: {_q(regex)}}}}}"
            routes.append(_route(f"fallback_path_{model}", match, cluster, config))
    for model, cluster in clusters.items():
        match = (
            '{prefix: "/", headers: [{name: x-model, string_match: {exact: ' + _q(model) + "}}]}"
        )
        routes.append(_route(f"fallback_header_{model}", match, cluster, config))
    fo = config.fail_open
    for path, default in (
        ("/v1/chat/completions", fo.chat_model),
        ("/v1/completions", fo.completions_model),
        ("/v1/embeddings", fo.embeddings_model),
    ):
        if default is not None and default in clusters:
            match = f"{{path: {_q(path)}}}"
            routes.append(_route(f"fallback_default_{path}", match, clusters[default], config))
    return "".join(routes), "".join(cluster_text)


def _removals(headers: tuple[str, ...], indent: int) -> str:
    """``- remove: <header>`` lines: client copies of every routing header are dropped."""
    return "".join(f"{' ' * indent}- remove: {h}\n" for h in headers)


def render_bootstrap(config: Config, ports: EnvoyPorts | None = None) -> str:
    """The Envoy bootstrap YAML for ``config`` (ports default to the routing file's)."""
    ports = ports or EnvoyPorts.from_config(config)
    routes, clusters = fallback_blocks(config)
    endpoints = "".join(
        f"        - endpoint: {_socket(ports.ext_proc_host, p)}\n" for p in ports.ext_proc_ports
    )
    limit = config.limits.max_body_bytes
    return Template(template_text()).substitute(
        LISTEN_HOST=ports.listen_host,
        LISTEN_PORT=ports.listen_port,
        ADMIN_HOST=ports.admin_host,
        ADMIN_PORT=ports.admin_port,
        EXT_PROC_ENDPOINTS=endpoints,
        FAILURE_MODE_ALLOW="true" if config.failure_mode is FailureMode.OPEN else "false",
        MESSAGE_TIMEOUT=f"{config.envoy.message_timeout_ms / 1000:.3f}s",
        MAX_BODY_BYTES=limit,
        GRPC_MAX_MESSAGE_BYTES=config.limits.grpc_max_message_bytes,
        ROUTE_TIMEOUT=f"{config.envoy.route_timeout_s}s",
        STREAM_IDLE_TIMEOUT=f"{config.envoy.stream_idle_timeout_s}s",
        STRIP_ROUTING_HEADERS_EARLY=_removals(ROUTING_HEADERS, 14),
        STRIP_ROUTING_HEADERS=_removals(ROUTING_HEADERS, 16),
        FALLBACK_ROUTES=routes,
        FALLBACK_CLUSTERS=clusters,
    )
