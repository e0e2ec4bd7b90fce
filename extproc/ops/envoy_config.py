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


def _access_log_cluster(index: int, endpoint: str) -> str:
    name = f"access_log_{index}"
    return (
        f"  - name: {name}\n"
        "    type: STATIC\n"
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
        out = []
        for port in worker_ports:
            sock = config.listener.unix_socket_at(port) if ports.unix_sockets else None
            endpoint = _pipe(sock) if sock else _socket(ports.ext_proc_host, port)
            out.append((f"{ports.ext_proc_host}:{port}", endpoint))
        return [*out, *peers]

    def endpoints(worker_ports: tuple[int, ...]) -> str:
        return "".join(f"        - endpoint: {e}\n" for _, e in workers(worker_ports))

    flush = f"{config.signals.access_log_flush_ms / 1000:.3f}s"
    decided = workers(ports.ext_proc_ports)

    limit = config.limits.max_body_bytes
    return Template(template_text()).substitute(
        NODE_ID=_q(f"envoy-{ports.listen_host}-{ports.listen_port}"),
        LISTEN_HOST=ports.listen_host,
        LISTEN_PORT=ports.listen_port,
        ADMIN_HOST=ports.admin_host,
        ADMIN_PORT=ports.admin_port,
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
            _access_log_cluster(i, e) for i, (_, e) in enumerate(decided)
        ),
        LOCAL_REPLY_MAPPERS=render_mappers(limit, config.limits.max_request_headers),
        JWT_FILTER=gateway_filters.jwt_filter(config, jwks),
        EXT_AUTHZ_FILTER=gateway_filters.ext_authz_filter(config),
        J2M_RESPONSE_RULES=gateway_filters.response_rules(config),
        FORWARDED_NAMESPACES=gateway_filters.forwarded_namespaces(config),
    )
