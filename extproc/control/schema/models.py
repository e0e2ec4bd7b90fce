"""What is served: models (protocol, versions, specs, timeouts) and their deployments
(endpoints, weights, tags, health checks, quotas, cost)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from extproc.control.net import is_ip, join_host_port
from extproc.control.schema.base import (
    HOST_PORT,
    TAG_KEY,
    Strict,
)
from extproc.control.schema.scheduling import (
    MetricsSourceConfig,
    ModelSchedulingConfig,
    ObjectiveConfig,
)
from extproc.core.request import ProtocolName


class TimeoutsConfig(Strict):
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


class ModelConfig(Strict):
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


class Endpoint(Strict):
    host: str
    port: int

    @property
    def address(self) -> str:
        return join_host_port(self.host, self.port)

    @property
    def is_ip(self) -> bool:
        return is_ip(self.host)


class HealthCheckConfig(Strict):
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


class CostConfig(Strict):
    """A deployment's price, for the ``cost`` scorer and the spend counter."""

    per_request: Annotated[float, Field(ge=0)] = 0.0
    per_1k_prompt_tokens: Annotated[float, Field(ge=0)] = 0.0
    per_1k_completion_tokens: Annotated[float, Field(ge=0)] = 0.0


class DeploymentConfig(Strict):
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
            m = HOST_PORT.match(item.strip())
            if m is None or not 1 <= int(m["port"]) <= 65535:
                raise ValueError(f"endpoint {item!r} is not host:port (IPv6 as [addr]:port)")
            out.append({"host": m["v6"] or m["host"], "port": int(m["port"])})
        return out

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            for k in value:
                if not isinstance(k, str) or not TAG_KEY.match(k):
                    raise ValueError(f"tag key {k!r} must match {TAG_KEY.pattern}")
            return {k: str(v) for k, v in value.items()}
        return value
