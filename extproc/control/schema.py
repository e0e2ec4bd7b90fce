"""The routing file's schema: plain typed, frozen config data (pydantic models).

Loading (YAML with line numbers) is :mod:`extproc.control.loading`; turning a
``Config`` into what the hot path reads (compiled specs, rules and scheduling
profiles) is :mod:`extproc.control.compile`. Nothing here compiles or does I/O.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from extproc.control.gateway.schema import GatewaySections
from extproc.control.net import is_ip, join_host_port
from extproc.core.protocols.json_body import DEFAULT_MAX_DEPTH
from extproc.core.request import ProtocolName

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
GRPC_OVERHEAD_BYTES = 256 * 1024
"""Headers, metadata and framing on top of a body in one ext_proc gRPC message."""
_DNS_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_HOSTPORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})$"
)
_TAG_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class FailureMode(StrEnum):
    """What Envoy does when the router cannot answer (down, timeout)."""

    OPEN = "open"
    CLOSED = "closed"


class ListenerConfig(_Strict):
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


class EnvoyConfig(_Strict):
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
        if value is not None and not (is_ip(value) or _DNS_NAME.fullmatch(value)):
            raise ValueError(f"router_host {value!r} must be an IP address or a host name, no port")
        return value

    @field_validator("routers")
    @classmethod
    def _host_ports(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            m = _HOSTPORT.match(item)
            if m is None or not is_ip(m["v6"] or m["host"]):
                raise ValueError(f"router {item!r} must be ip:port (IPv6 as [addr]:port)")
        return value


class LimitsConfig(_Strict):
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


class ConsulConfig(_Strict):
    """Consul connection and mapping. Unset fields fall back to Consul's own environment
    variables (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE,
    CONSUL_HTTP_SSL, CONSUL_HTTP_SSL_VERIFY, CONSUL_CACERT, CONSUL_CLIENT_CERT,
    CONSUL_CLIENT_KEY, CONSUL_DATACENTER), then to Consul's defaults."""

    address: str | None = None
    token: str | None = None
    datacenter: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_verify: bool | None = None
    service_tag: Annotated[str, Field(min_length=1)] = "model-router"
    """Only services carrying this tag are model deployments."""
    routable_states: tuple[Literal["passing", "warning"], ...] = ("passing",)
    """Health states that may receive traffic; add ``warning`` to route to warning instances."""
    wait_s: Annotated[int, Field(ge=1, le=600)] = 30
    """Blocking-query wait: Consul answers at once on change, else after this long."""
    startup_timeout_s: Annotated[float, Field(ge=0, le=600)] = 10.0
    recovery_grace_s: Annotated[float, Field(ge=0, le=600)] = 10.0
    """After Consul answers again following an outage, a model version its answers leave
    with no routable instance keeps its last known instances this long (0: never)."""
    fallback_to_file: bool = False
    """Consul unreachable at start-up: route on this file's ``deployments`` meanwhile
    (otherwise stay NOT_SERVING until Consul answers)."""


class RegistryConfig(_Strict):
    type: Literal["static", "consul"] = "static"
    consul: ConsulConfig = ConsulConfig()


class EjectionConfig(_Strict):
    """Passive ejection from Envoy's access-log outcomes (the ``not_ejected`` filter)."""

    consecutive_failures: Annotated[int, Field(ge=1, le=1000)] = 3
    """5xx answers or connect failures in a row that eject an endpoint."""
    base_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    """First cooldown; it doubles each time the endpoint is ejected again (up to max_s)."""
    max_s: Annotated[float, Field(gt=0, le=86400)] = 300.0
    max_share: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Never more than this share of a deployment's endpoints out at once."""


class SignalsConfig(_Strict):
    """Live signals for load-aware scheduling, gathered off the request path."""

    scrape_interval_ms: Annotated[int, Field(ge=10, le=60000)] = 100
    """How often model servers' metrics are scraped (only for models whose profile has
    a scorer that reads them: queue, kv_cache, lora_affinity)."""
    scrape_timeout_ms: Annotated[int, Field(ge=10, le=60000)] = 1000
    max_concurrent_scrapes: Annotated[int, Field(ge=1, le=1024)] = 32
    stale_after_ms: Annotated[int, Field(ge=10, le=600000)] = 2000
    """Load older than this is stale: queue and KV scorers count it as saturated."""
    inflight_timeout_s: Annotated[float, Field(gt=0, le=86400)] = 900.0
    """A pick whose access-log entry never came (Envoy dropped it) is released after this."""
    access_log_flush_ms: Annotated[int, Field(ge=1, le=10000)] = 20
    """Envoy's gRPC access-log flush interval (its default 1 s would hold in-flight counts
    up to a second after each request ended)."""
    latency_alpha: Annotated[float, Field(gt=0, le=1)] = 0.2
    """EWMA weight of the newest latency sample."""
    ejection: EjectionConfig = EjectionConfig()


class PriorityClassConfig(_Strict):
    max_load: Annotated[float, Field(gt=0, le=100)] | None = 1.0
    """Shed this class (429) when even the least loaded candidate is at this load (1.0:
    saturated); ``null``: never shed (quotas included), and routed to the least loaded
    candidates once everything is saturated."""


DEFAULT_CLASSES = {
    # never shed; past saturation it goes to the least loaded endpoints
    "critical": PriorityClassConfig(max_load=None),
    # admitted past saturation while the headroom lasts (queues at 1.5x saturation)
    "standard": PriorityClassConfig(max_load=1.5),
    # shed first, at saturation (the GIE endpoint picker's sheddable requests)
    "sheddable": PriorityClassConfig(max_load=1.0),
}


_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")
_CLASS_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


class AdmissionConfig(_Strict):
    """Priority classes, load shedding and latency budgets (README "Admission")."""

    enabled: bool = True
    """``false``: no classes, shedding, quotas or budgets (their headers are ignored)."""
    priority_header: str = "x-model-router-priority"
    default_class: str = "standard"
    classes: Mapping[str, PriorityClassConfig] = Field(default_factory=lambda: DEFAULT_CLASSES)
    retry_after_s: Annotated[int, Field(ge=0, le=3600)] = 1
    queue_saturation: Annotated[float, Field(gt=0)] = 5.0
    """Waiting requests at which an endpoint counts as saturated (load 1.0)."""
    kv_saturation: Annotated[float, Field(gt=0, le=1)] = 0.8
    """KV-cache usage at which an endpoint counts as saturated (load 1.0)."""
    budget_header: str = "x-model-router-ttft-budget-ms"
    on_budget_miss: Literal["route_best", "reject_429", "reject_503"] = "route_best"
    """No candidate is predicted to meet the time-to-first-token budget: route to the
    best one (the response says ``x-model-router-budget-at-risk: 1``), or refuse."""
    default_completion_tokens: Annotated[int, Field(ge=0)] = 256
    """Completion tokens assumed for cost when the request sets no max_tokens."""

    @field_validator("priority_header", "budget_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a header name")
        return value.lower()  # Envoy hands the router lower-case names

    @field_validator("classes")
    @classmethod
    def _class_names(cls, value: Mapping[str, PriorityClassConfig]) -> Any:
        if not value:
            raise ValueError("declare at least one priority class")
        bad = [n for n in value if not _CLASS_NAME.fullmatch(n)]
        if bad:
            raise ValueError(
                f"class name(s) {', '.join(map(repr, bad))}: use letters, digits, '_' and '-' "
                "(at most 32)"
            )
        return value

    @model_validator(mode="after")
    def _default_exists(self) -> AdmissionConfig:
        if self.default_class not in self.classes:
            raise ValueError(
                f"default_class {self.default_class!r} is not one of the classes "
                f"({', '.join(sorted(self.classes))})"
            )
        return self


class ObjectiveConfig(_Strict):
    ttft_ms: Annotated[float, Field(gt=0)]
    """Time-to-first-token budget of the model's requests (a request's
    ``x-model-router-ttft-budget-ms`` overrides it)."""


class MetricsSourceConfig(_Strict):
    """Where a deployment's model servers export Prometheus metrics, and in which names."""

    enabled: bool = True
    path: str = "/metrics"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Default: the endpoint's own port (vLLM, TGI, SGLang); Triton uses 8002."""
    format: Literal["vllm", "triton", "custom"] | None = None
    """Default by protocol: openai -> vllm, kserve_v2 -> triton."""
    waiting: str | None = None
    """``custom`` format: the gauge of queued requests (and running, kv_usage below)."""
    running: str | None = None
    kv_usage: str | None = None


DEFAULT_FILTERS = ("routable", "version", "capabilities", "subset")
"""The default profile's filters: today's routing, as scheduling plugins."""


class PluginRef(_Strict):
    """A scheduling plugin by its registered name, with its typed parameters."""

    type: Annotated[str, Field(min_length=1)]
    params: Mapping[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value


class ScorerRef(PluginRef):
    weight: Annotated[float, Field(ge=0, le=1000)] = 1.0
    """Scores (each in [0, 1]) are summed with these weights; the picker reads the sum."""


class ProfileConfig(_Strict):
    """filters -> weighted scorers -> picker (the Gateway API Inference Extension's shape)."""

    filters: tuple[PluginRef, ...] = tuple(PluginRef(type=f) for f in DEFAULT_FILTERS)
    scorers: tuple[ScorerRef, ...] = ()
    picker: PluginRef = PluginRef(type="round_robin")
    max_fallbacks: Annotated[int, Field(ge=0, le=16)] | None = None
    """Endpoints after the primary; default: ``scheduling.max_fallbacks``."""


class SchedulingConfig(_Strict):
    """Named profiles, the one models use by default, and the built-in ``default`` profile's
    picker and fallbacks (``picker: weighted_random`` is shorthand for that profile)."""

    profile: str = "default"
    """The profile of models that do not name one."""
    picker: PluginRef | None = None
    """The built-in ``default`` profile's picker (round robin when unset)."""
    max_fallbacks: Annotated[int, Field(ge=0, le=16)] = 2
    profiles: Mapping[str, ProfileConfig] = Field(default_factory=dict)


class ModelSchedulingConfig(_Strict):
    """A model's profile by name; or, as shorthand, the default filters with another picker."""

    profile: str | None = None
    picker: PluginRef | None = None
    max_fallbacks: Annotated[int, Field(ge=0, le=16)] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> ModelSchedulingConfig:
        if self.profile is not None and self.picker is not None:
            raise ValueError("name a profile or a picker, not both")
        return self


class TimeoutsConfig(_Strict):
    """How long Envoy waits for one of a model's servers; unset: the ``envoy`` defaults."""

    connect_s: Annotated[float, Field(gt=0, le=600)] | None = None
    """TCP connect to an endpoint (a refused or unreachable one: the next is tried)."""
    first_byte_s: Annotated[float, Field(gt=0, le=86400)] | None = None
    """From the request sent to the response's headers, per attempt (Envoy's
    ``per_try_timeout``): a hung server gets a JSON 504 after this long. Streamed responses
    send headers at once; a non-streamed generation must finish within it."""
    total_s: Annotated[float, Field(gt=0, le=86400)] | None = None
    """The whole response, streamed body included (Envoy's route ``timeout``)."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """A model's effective timeouts, in seconds."""

    connect_s: float
    first_byte_s: float
    total_s: float


class ModelConfig(_Strict):
    protocol: ProtocolName
    versions: Annotated[tuple[str, ...], Field(min_length=1)]
    scheduling: ModelSchedulingConfig | None = None
    objective: ObjectiveConfig | None = None
    timeouts: TimeoutsConfig = TimeoutsConfig()
    native: bool | Literal["auto"] = "auto"
    """Whether Envoy routes this model's requests itself, without the router (README:
    "Native routing"): ``auto`` where that gives the router's answer (KServe-path and
    ``x-model`` models without a spec, a content rule or a load-aware profile);
    ``true`` also for an OpenAI model, whose strict body checks are then skipped."""
    spec: Mapping[str, Any] | None = None
    """Inline model spec: ``{openai: {...}}`` or ``{kserve_v2: {...}}`` (see README)."""

    @field_validator("versions", mode="before")
    @classmethod
    def _versions_as_strings(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            out = []
            for v in value:
                if isinstance(v, bool) or not isinstance(v, str | int):
                    raise ValueError("each version must be a string (or an integer)")
                out.append(str(v))
            if len(set(out)) != len(out):
                raise ValueError("versions must be unique")
            return tuple(out)
        return value


class Endpoint(_Strict):
    host: str
    port: int

    @property
    def address(self) -> str:
        return join_host_port(self.host, self.port)

    @property
    def is_ip(self) -> bool:
        return is_ip(self.host)


class HealthCheckConfig(_Strict):
    """Envoy's active health check of a deployment's endpoints (routing-file registry only:
    Consul's own checks decide for Consul endpoints)."""

    enabled: bool = True
    path: str | None = None
    """HTTP GET path; default by protocol: ``/health`` (OpenAI-compatible servers),
    ``/v2/health/ready`` (KServe v2); generic models have none unless set here."""
    interval_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 0.5
    unhealthy_threshold: Annotated[int, Field(ge=1, le=100)] = 2
    healthy_threshold: Annotated[int, Field(ge=1, le=100)] = 1

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must start with /")
        return value


class CostConfig(_Strict):
    """A deployment's price, for the ``cost`` scorer and the spend counter."""

    per_request: Annotated[float, Field(ge=0)] = 0.0
    per_1k_prompt_tokens: Annotated[float, Field(ge=0)] = 0.0
    per_1k_completion_tokens: Annotated[float, Field(ge=0)] = 0.0


class DeploymentConfig(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=253)]
    model: str
    version: str
    endpoints: Annotated[tuple[Endpoint, ...], Field(min_length=1)]
    weight: Annotated[int, Field(ge=0, le=10000)] = 1
    tags: Mapping[str, str] = Field(default_factory=dict)
    enabled: bool = True
    health_check: HealthCheckConfig = HealthCheckConfig()
    metrics: MetricsSourceConfig = MetricsSourceConfig()
    max_inflight: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    """Capacity quota: at most this many requests in flight on the deployment (across
    router workers: each enforces its share; README "Admission")."""
    max_inflight_per_endpoint: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    cost: CostConfig | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_str(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("endpoints", mode="before")
    @classmethod
    def _parse_endpoints(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        out: list[Any] = []
        for item in value:
            if not isinstance(item, str):
                out.append(item)
                continue
            m = _HOSTPORT.match(item.strip())
            if m is None or not 1 <= int(m["port"]) <= 65535:
                raise ValueError(f"endpoint {item!r} is not host:port (IPv6 as [addr]:port)")
            out.append({"host": m["v6"] or m["host"], "port": int(m["port"])})
        return out

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            for k in value:
                if not isinstance(k, str) or not _TAG_KEY.match(k):
                    raise ValueError(f"tag key {k!r} must match {_TAG_KEY.pattern}")
            return {k: str(v) for k, v in value.items()}
        return value


class Config(GatewaySections):
    """The whole routing file. References between its sections (a deployment's model and
    version, profile names) are checked by :mod:`extproc.control.loading`; the gateway
    sections (``auth``, ``tenants``, ``quotas``) are in :mod:`extproc.control.gateway`."""

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "fail_open" in data:
            raise ValueError(
                "fail_open: removed; with failure_mode: open, Envoy now sends each request "
                "to its own model's deployments (identified from the path, x-model or the "
                "body's model) using the last config the router pushed; delete this key"
            )
        return data

    listener: ListenerConfig = ListenerConfig()
    envoy: EnvoyConfig = EnvoyConfig()
    failure_mode: FailureMode = FailureMode.CLOSED
    limits: LimitsConfig = LimitsConfig()
    registry: RegistryConfig = RegistryConfig()
    scheduling: SchedulingConfig = SchedulingConfig()
    signals: SignalsConfig = SignalsConfig()
    admission: AdmissionConfig = AdmissionConfig()
    spec_files: tuple[str, ...] = ()
    """Files of model specs in the neutral form (model name -> spec), JSON or YAML,
    relative to the routing file."""
    models: Mapping[str, ModelConfig] = Field(default_factory=dict)
    deployments: tuple[DeploymentConfig, ...] = ()
    tenant_header: str = "x-tenant-id"
    """The header content rules read as ``tenant``."""
    rules: tuple[Any, ...] = ()
    """Content rules, evaluated in order; the first that matches applies (docs/rules.md)."""

    def timeouts_of(self, model: str | None) -> Timeouts:
        """``model``'s timeouts (None, or a Consul-only model: the ``envoy`` defaults)."""
        envoy = self.envoy
        declared = self.models.get(model) if model is not None else None
        own = declared.timeouts if declared is not None else TimeoutsConfig()
        return Timeouts(
            connect_s=own.connect_s or envoy.connect_timeout_s,
            first_byte_s=own.first_byte_s or envoy.first_byte_timeout_s,
            total_s=own.total_s or float(envoy.route_timeout_s),
        )

    def worker_ports(self) -> list[int]:
        return [self.listener.port + i for i in range(self.listener.workers)]

    def deployments_of(self, model: str) -> list[DeploymentConfig]:
        return [d for d in self.deployments if d.model == model]
