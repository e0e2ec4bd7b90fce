"""How endpoints are chosen: live signals, ejection, admission (priority classes,
budgets), model-server metrics and scheduling profiles (plugins by name)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from extproc.control.schema.base import (
    Strict,
)


class EjectionConfig(Strict):
    """Passive ejection from Envoy's access-log outcomes (the ``not_ejected`` filter)."""

    consecutive_failures: Annotated[int, Field(ge=1, le=1000)] = 3
    """5xx answers or connect failures in a row that eject an endpoint."""
    base_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    """First cooldown; it doubles each time the endpoint is ejected again (up to max_s)."""
    max_s: Annotated[float, Field(gt=0, le=86400)] = 300.0
    max_share: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Never more than this share of a deployment's endpoints out at once."""


class SignalsConfig(Strict):
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


class PriorityClassConfig(Strict):
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


class AdmissionConfig(Strict):
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


class ObjectiveConfig(Strict):
    ttft_ms: Annotated[float, Field(gt=0)]
    """Time-to-first-token budget of the model's requests (a request's
    ``x-model-router-ttft-budget-ms`` overrides it)."""


class MetricsSourceConfig(Strict):
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


class PluginRef(Strict):
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


class ProfileConfig(Strict):
    """filters -> weighted scorers -> picker (the Gateway API Inference Extension's shape)."""

    filters: tuple[PluginRef, ...] = tuple(PluginRef(type=f) for f in DEFAULT_FILTERS)
    scorers: tuple[ScorerRef, ...] = ()
    picker: PluginRef = PluginRef(type="round_robin")
    max_fallbacks: Annotated[int, Field(ge=0, le=16)] | None = None
    """Endpoints after the primary; default: ``scheduling.max_fallbacks``."""


class SchedulingConfig(Strict):
    """Named profiles, the one models use by default, and the built-in ``default`` profile's
    picker and fallbacks (``picker: weighted_random`` is shorthand for that profile)."""

    profile: str = "default"
    """The profile of models that do not name one."""
    picker: PluginRef | None = None
    """The built-in ``default`` profile's picker (round robin when unset)."""
    max_fallbacks: Annotated[int, Field(ge=0, le=16)] = 2
    profiles: Mapping[str, ProfileConfig] = Field(default_factory=dict)


class ModelSchedulingConfig(Strict):
    """A model's profile by name; or, as shorthand, the default filters with another picker."""

    profile: str | None = None
    picker: PluginRef | None = None
    max_fallbacks: Annotated[int, Field(ge=0, le=16)] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> ModelSchedulingConfig:
        if self.profile is not None and self.picker is not None:
            raise ValueError("name a profile or a picker, not both")
        return self
