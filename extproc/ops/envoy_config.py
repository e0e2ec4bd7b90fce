"""Render Envoy's bootstrap from the shipped template and a routing file.

``envoy/envoy.yaml`` in the repository is exactly this rendering of
``examples/routes.yaml`` (a test keeps them equal), so what ``model-router up``
runs and what platform teams adapt are the same file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from extproc.control.net import is_ip
from extproc.control.schema import Config, FailureMode
from extproc.control.xds.routes import ROUTE_CONFIG_NAME
from extproc.core.envoy_wire import ROUTING_HEADERS, WORKER_HEADER
from extproc.ops import gateway_filters
from extproc.ops.local_replies import render_mappers


@dataclass(frozen=True, slots=True)
class EnvoyPorts:
    """Where the rendered Envoy listens and where it finds the router workers."""

    listen_port: int
    admin_port: int
    ext_proc_ports: tuple[int, ...]
    ext_proc_host: str = "127.0.0.1"
    listen_host: str = "127.0.0.1"
    admin_host: str = "127.0.0.1"
    xds_ports: tuple[int, ...] | None = None
    """Where Envoy fetches its config, when not from the ext_proc workers (benchmarks
    that put another ext_proc in front of the router's xDS)."""
    unix_sockets: bool = True
    """Reach this router's workers on their Unix sockets when the routing file has them
    (same host); False: always TCP."""
    stats_port: int = 0
    """The listener serving only ``/stats/prometheus`` and ``/ready`` (0: none)."""

    @classmethod
    def from_config(cls, config: Config) -> EnvoyPorts:
        return cls(
            listen_port=config.envoy.listen_port,
            admin_port=config.envoy.admin_port,
            ext_proc_ports=tuple(config.worker_ports()),
            ext_proc_host=config.envoy.router_host or config.listener.host,
            listen_host=config.envoy.listen_host,
            stats_port=config.envoy.stats_port,
            unix_sockets=config.envoy.router_host is None,  # reached by name: TCP
        )


def template_text() -> str:
    return resources.files("extproc.ops").joinpath("templates/envoy.yaml.tmpl").read_text()


def _q(value: str) -> str:
    """A YAML-safe double-quoted scalar."""
    return json.dumps(value)


def _pipe(path: str) -> str:
    return f"{{address: {{pipe: {{path: {_q(path)}}}}}}}"


def _socket(host: str, port: int) -> str:
    return f"{{address: {{socket_address: {{address: {_q(host)}, port_value: {port}}}}}}}"


def _removals(headers: tuple[str, ...], indent: int) -> str:
    """``- remove: <header>`` lines: client copies of every routing header are dropped."""
    return "".join(f"{' ' * indent}- remove: {h}\n" for h in headers)


def _access_log(index: int, worker: str, flush: str) -> str:
    return (
        "          - name: envoy.access_loggers.http_grpc\n"
        "            filter:\n"
        "              header_filter:\n"
        f"                header: {{name: {WORKER_HEADER},"
        f" string_match: {{exact: {_q(worker)}}}}}\n"
        "            typed_config:\n"
        '              "@type": type.googleapis.com/envoy.extensions.access_loggers.grpc.v3'
        ".HttpGrpcAccessLogConfig\n"
        "              common_config:\n"
        f"                log_name: model_router_worker_{index}\n"
        "                transport_api_version: V3\n"
        f"                buffer_flush_interval: {flush}\n"
        f"                grpc_service: {{envoy_grpc: {{cluster_name: access_log_{index}}}}}\n"
    )


def _cluster_type(host: str) -> str:
    """STATIC for addresses; STRICT_DNS for a name (Envoy resolves it, IPv4 first, and
    follows it when it changes, as a container's address does when it is recreated)."""
    if is_ip(host.strip("[]")):
        return "type: STATIC"
    return "type: STRICT_DNS\n    dns_lookup_family: V4_PREFERRED"


def _stats_listener(host: str, port: int) -> str:
    """A listener that exposes only ``/stats/prometheus`` and ``/ready`` of the admin
    interface (route to the ``envoy_admin`` cluster): Prometheus and other hosts' health
    checks reach those, never the admin's mutating endpoints."""
    if port == 0:
        return ""
    routes = "".join(
        f"              - match: {{path: {path}}}\n"
        "                route: {cluster: envoy_admin}\n"
        for path in ("/stats/prometheus", "/ready")
    )
    return (
        "  # Prometheus scrapes Envoy here (envoy.stats_port): only /stats/prometheus and\n"
        "  # /ready of the admin interface, which stays on loopback (it can stop Envoy).\n"
        "  - name: model_router_stats\n"
        f"    address: {{socket_address: {{address: {_q(host)}, port_value: {port}}}}}\n"
        "    filter_chains:\n"
        "    - filters:\n"
        "      - name: envoy.filters.network.http_connection_manager\n"
        "        typed_config:\n"
        '          "@type": type.googleapis.com/envoy.extensions.filters.network'
        ".http_connection_manager.v3.HttpConnectionManager\n"
        "          stat_prefix: model_router_stats\n"
        "          route_config:\n"
        "            virtual_hosts:\n"
        "            - name: stats\n"
        '              domains: ["*"]\n'
        "              routes:\n"
        f"{routes}"
        "          http_filters:\n"
        "          - name: envoy.filters.http.router\n"
        "            typed_config:\n"
        '              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3'
        ".Router\n"
    )


def _admin_cluster(host: str, port: int, stats_port: int) -> str:
    if stats_port == 0:
        return ""
    return (
        "  - name: envoy_admin\n"
        "    type: STATIC\n"
        "    connect_timeout: 1s\n"
        "    load_assignment:\n"
        "      cluster_name: envoy_admin\n"
        "      endpoints:\n"
        "      - lb_endpoints:\n"
        f"        - endpoint: {_socket(host, port)}\n"
    )


def _access_log_cluster(index: int, endpoint: str, cluster_type: str) -> str:
    name = f"access_log_{index}"
    return (
        f"  - name: {name}\n"
        f"    {cluster_type}\n"
        "    connect_timeout: 1s\n"
        "    typed_extension_protocol_options:\n"
        "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
        '        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3'
        ".HttpProtocolOptions\n"
        "        explicit_http_config: {http2_protocol_options: {}}\n"
        "    load_assignment:\n"
        f"      cluster_name: {name}\n"
        "      endpoints:\n"
        "      - lb_endpoints:\n"
        f"        - endpoint: {endpoint}\n"
    )


def render_bootstrap(
    config: Config, ports: EnvoyPorts | None = None, jwks: Path | None = None
) -> str:
    """The Envoy bootstrap YAML for ``config`` (ports default to the routing file's;
    ``jwks``: the JWKS file's absolute path, when ``auth.jwt`` is set)."""
    ports = ports or EnvoyPorts.from_config(config)
    peers: list[tuple[str, str]] = []  # (worker id, endpoint)
    for item in config.envoy.routers:
        host, _, peer_port = item.rpartition(":")
        peers.append((item, _socket(host.strip("[]"), int(peer_port))))

    def workers(worker_ports: tuple[int, ...]) -> list[tuple[str, str]]:
        # A worker's id (what it tags its decisions with) is its own listen address;
        # the endpoint is where Envoy reaches it (envoy.router_host, a socket...).
        out = []
        for port in worker_ports:
            sock = config.listener.unix_socket_at(port) if ports.unix_sockets else None
            endpoint = _pipe(sock) if sock else _socket(ports.ext_proc_host, port)
            out.append((f"{config.listener.host}:{port}", endpoint))
        return [*out, *peers]

    def endpoints(worker_ports: tuple[int, ...]) -> str:
        return "".join(f"        - endpoint: {e}\n" for _, e in workers(worker_ports))

    flush = f"{config.signals.access_log_flush_ms / 1000:.3f}s"
    decided = workers(ports.ext_proc_ports)
    by_dns = config.listener.unix_socket_dir is None or not ports.unix_sockets
    router_cluster = _cluster_type(ports.ext_proc_host if by_dns else "127.0.0.1")

    limit = config.limits.max_body_bytes
    return Template(template_text()).substitute(
        NODE_ID=_q(f"envoy-{ports.listen_host}-{ports.listen_port}"),
        LISTEN_HOST=ports.listen_host,
        LISTEN_PORT=ports.listen_port,
        ADMIN_HOST=ports.admin_host,
        ADMIN_PORT=ports.admin_port,
        ROUTER_CLUSTER_TYPE=router_cluster,
        EXT_PROC_ENDPOINTS=endpoints(ports.ext_proc_ports),
        XDS_ENDPOINTS=endpoints(ports.xds_ports or ports.ext_proc_ports),
        FAILURE_MODE_ALLOW="true" if config.failure_mode is FailureMode.OPEN else "false",
        MESSAGE_TIMEOUT=f"{config.envoy.message_timeout_ms / 1000:.3f}s",
        MAX_BODY_BYTES=limit,
        MAX_REQUEST_HEADERS=config.limits.max_request_headers,
        GRPC_MAX_MESSAGE_BYTES=config.limits.grpc_max_message_bytes,
        STRIP_ROUTING_HEADERS_EARLY=_removals(ROUTING_HEADERS, 14),
        STRIP_ROUTING_HEADERS=_removals(ROUTING_HEADERS, 16),
        ROUTE_CONFIG_NAME=ROUTE_CONFIG_NAME,
        ROUTER_ACCESS_LOGS="".join(_access_log(i, w, flush) for i, (w, _) in enumerate(decided)),
        ROUTER_ACCESS_LOG_CLUSTERS="".join(
            _access_log_cluster(i, e, router_cluster) for i, (_, e) in enumerate(decided)
        ),
        LOCAL_REPLY_MAPPERS=render_mappers(limit, config.limits.max_request_headers),
        JWT_FILTER=gateway_filters.jwt_filter(config, jwks),
        EXT_AUTHZ_FILTER=gateway_filters.ext_authz_filter(config),
        J2M_RESPONSE_RULES=gateway_filters.response_rules(config),
        FORWARDED_NAMESPACES=gateway_filters.forwarded_namespaces(config),
        STATS_LISTENER=_stats_listener(ports.listen_host, ports.stats_port),
        ADMIN_CLUSTER=_admin_cluster(ports.admin_host, ports.admin_port, ports.stats_port),
    )
