"""Render Envoy's bootstrap from the shipped template and a routing file.

``envoy/envoy.yaml`` in the repository is exactly this rendering of
``examples/routes.yaml`` (a test keeps them equal), so what ``model-router up``
runs and what platform teams adapt are the same file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from string import Template

from extproc.control.schema import Config, FailureMode
from extproc.control.xds.routes import ROUTE_CONFIG_NAME
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


def render_bootstrap(config: Config, ports: EnvoyPorts | None = None) -> str:
    """The Envoy bootstrap YAML for ``config`` (ports default to the routing file's)."""
    ports = ports or EnvoyPorts.from_config(config)
    peers = []
    for item in config.envoy.routers:
        host, _, peer_port = item.rpartition(":")
        peers.append(_socket(host.strip("[]"), int(peer_port)))

    def endpoints(worker_ports: tuple[int, ...]) -> str:
        out = []
        for i, port in enumerate(worker_ports):
            sock = config.listener.unix_socket(i) if ports.unix_sockets else None
            out.append(_pipe(sock) if sock else _socket(ports.ext_proc_host, port))
        return "".join(f"        - endpoint: {e}\n" for e in [*out, *peers])

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
    )
