"""Where the router and Envoy run: the listener (sockets, workers), Envoy's bootstrap
and xDS settings, and the size limits both agree on."""

from __future__ import annotations

import sys
from typing import Annotated

from pydantic import Field, field_validator

from extproc.control.net import is_ip
from extproc.control.schema.base import (
    DEFAULT_MAX_BODY_BYTES,
    DNS_NAME,
    GRPC_OVERHEAD_BYTES,
    HOST_PORT,
    Strict,
)
from extproc.core.protocols.json_body import DEFAULT_MAX_DEPTH


class ListenerConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 50051
    """gRPC port of worker 0; worker *i* listens on ``port + i``."""
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9464
    """Prometheus port of worker 0 (worker *i*: ``metrics_port + i``); 0 disables."""
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    grace_period_s: Annotated[float, Field(ge=0, le=600)] = 10.0
    """On SIGTERM: how long open streams may take to finish."""
    pin_cpu: bool = False
    """Pin worker *i* to CPU *i* (mod CPUs): keeps grpc.aio's thread hand-offs on one core
    (measured: ~20% less router CPU per request at moderate load on 2 cores)."""
    drain_delay_s: Annotated[float, Field(ge=0, le=600)] = 0.0
    """On SIGTERM: how long to report NOT_SERVING, still serving, before stopping, so
    health checkers (Envoy's ext_proc cluster checks every second) move traffic first."""
    unix_socket_dir: str | None = "@model-router"
    """Each worker also listens on a Unix domain socket, ``<dir>/<host>-<its port>.sock``,
    and a same-host Envoy (``up``, ``envoy-config``) reaches the workers there for
    ext_proc, xDS and the access log: measured cheaper than TCP loopback (README
    Performance). A leading ``@`` is Linux's abstract namespace (the default): no file to
    create or clean up, reachable by the same processes as TCP loopback, and a name
    taken by another process fails start-up like a port in use. null: TCP only (Envoy
    on another host or network namespace reaches ``host:port``)."""

    def unix_socket(self, worker: int) -> str | None:
        """Worker *i*'s socket path (``@...``: abstract), when Unix sockets are on."""
        return self.unix_socket_at(self.port + worker)

    def unix_socket_at(self, port: int) -> str | None:
        """The socket path of the worker whose gRPC port is ``port``."""
        base = self.unix_socket_dir
        if base is None or (base.startswith("@") and not sys.platform.startswith("linux")):
            return None
        return f"{base.rstrip('/')}/{self.host}-{port}.sock"


RETRY_CONDITIONS = frozenset(
    {"connect-failure", "refused-stream", "reset", "5xx", "gateway-error", "retriable-status-codes"}
)


class EnvoyConfig(Strict):
    """How Envoy is configured: its bootstrap (``model-router up``, ``envoy-config``) and the
    clusters and routes the router serves it over xDS."""

    listen_host: str = "127.0.0.1"
    listen_port: Annotated[int, Field(ge=1, le=65535)] = 10000
    admin_port: Annotated[int, Field(ge=1, le=65535)] = 9901
    stats_port: Annotated[int, Field(ge=0, le=65535)] = 0
    """A listener on ``listen_host`` that serves only ``/stats/prometheus`` and ``/ready``
    of Envoy's admin interface (which stays on loopback: it can stop Envoy), for
    Prometheus and health checks from other hosts. 0: none."""
    router_host: str | None = None
    """Where Envoy reaches this router's workers (ext_proc, xDS, access logs): an IP, or a
    name Envoy resolves by DNS (a compose service name). Default: ``listener.host``; set it
    when the router listens on a wildcard address (``0.0.0.0``) or on another host; Envoy
    then reaches it over TCP, never its Unix sockets."""
    message_timeout_ms: Annotated[int, Field(ge=1, le=60000)] = 1000
    xds_ack_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    """How long the router waits for every connected Envoy to ACK new clusters and
    endpoints before it decides on a new state (make before break). Envoy ACKs in
    milliseconds; past this an Envoy is slow or stuck, the router routes on, and counts
    it in ``model_router_xds_ack_timeouts_total``."""
    route_timeout_s: Annotated[int, Field(ge=1, le=86400)] = 600
    """A whole response may take this long (streamed generations): every model's default
    ``timeouts.total_s``."""
    connect_timeout_s: Annotated[float, Field(gt=0, le=600)] = 2.0
    """Every model's default ``timeouts.connect_s``."""
    first_byte_timeout_s: Annotated[float, Field(gt=0, le=86400)] = 120.0
    """Every model's default ``timeouts.first_byte_s``."""
    stream_idle_timeout_s: Annotated[int, Field(ge=1, le=86400)] = 300
    retry_on: tuple[str, ...] = ("connect-failure", "refused-stream", "reset")
    """When Envoy tries the next endpoint (the router's fallbacks, then any other of the
    deployment): Envoy ``retry_on`` conditions; add ``5xx`` to retry server errors."""
    disclose_endpoint: bool = False
    """Send the serving ``ip:port`` to clients in ``x-model-router-endpoint`` (logs always
    have it)."""
    routers: tuple[str, ...] = ()
    """Other router replicas (``host:port`` of each worker) Envoy may use for xDS and
    ext_proc, beside this router's own workers."""

    @field_validator("retry_on")
    @classmethod
    def _known_conditions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - RETRY_CONDITIONS)
        if unknown:
            raise ValueError(
                f"unknown retry condition(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(RETRY_CONDITIONS))}"
            )
        return value

    @field_validator("router_host")
    @classmethod
    def _host_only(cls, value: str | None) -> str | None:
        if value is not None and not (is_ip(value) or DNS_NAME.fullmatch(value)):
            raise ValueError(f"router_host {value!r} must be an IP address or a host name, no port")
        return value

    @field_validator("routers")
    @classmethod
    def _host_ports(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            m = HOST_PORT.match(item)
            if m is None or not is_ip(m["v6"] or m["host"]):
                raise ValueError(f"router {item!r} must be ip:port (IPv6 as [addr]:port)")
        return value


class LimitsConfig(Strict):
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = DEFAULT_MAX_BODY_BYTES
    """Largest request body (bytes on the wire, and inflated size of a gzip body)."""
    max_json_depth: Annotated[int, Field(ge=8, le=1000)] = DEFAULT_MAX_DEPTH
    """Deepest JSON nesting accepted in a body (deeper is a 400)."""
    large_body_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024
    """Bodies this large (by ``content-length``) count against ``max_concurrent_large_bodies``."""
    max_concurrent_large_bodies: Annotated[int, Field(ge=0, le=10000)] = 8
    """Large bodies one router worker reads at once; more wait (at most half of
    ``envoy.message_timeout_ms``) before their body is sent, then get a JSON 429. 0: no bound."""
    max_request_headers: Annotated[int, Field(ge=32, le=10000)] = 100
    """Envoy's limit on a request's headers (its own and the router's included): over it,
    a JSON 431 ``request_headers_too_large``."""

    @property
    def grpc_max_message_bytes(self) -> int:
        """The gRPC message limit both Envoy and the router use: a whole body plus framing."""
        return self.max_body_bytes + GRPC_OVERHEAD_BYTES
