"""The routing file's schema: plain typed, frozen config data (pydantic models).

Loading (YAML with line numbers) is :mod:`extproc.control.loading`; turning a
``Config`` into what the hot path reads (compiled specs, rules and scheduling
profiles) is :mod:`extproc.control.compile`. Nothing here compiles or does I/O.

The sections live in submodules (``runtime``: listener, Envoy, limits; ``registry``;
``scheduling``: signals, admission, profiles; ``models``: models and deployments);
everything is importable from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, model_validator

from extproc.control.gateway.schema import GatewaySections
from extproc.control.schema.base import (
    DEFAULT_MAX_BODY_BYTES,
    GRPC_OVERHEAD_BYTES,
    FailureMode,
)
from extproc.control.schema.models import (
    CostConfig,
    DeploymentConfig,
    Endpoint,
    HealthCheckConfig,
    ModelConfig,
    Timeouts,
    TimeoutsConfig,
)
from extproc.control.schema.registry import (
    ConsulConfig,
    RegistryConfig,
)
from extproc.control.schema.runtime import (
    RETRY_CONDITIONS,
    EnvoyConfig,
    LimitsConfig,
    ListenerConfig,
)
from extproc.control.schema.scheduling import (
    DEFAULT_CLASSES,
    DEFAULT_FILTERS,
    AdmissionConfig,
    EjectionConfig,
    MetricsSourceConfig,
    ModelSchedulingConfig,
    ObjectiveConfig,
    PluginRef,
    PriorityClassConfig,
    ProfileConfig,
    SchedulingConfig,
    ScorerRef,
    SignalsConfig,
)

__all__ = [
    "DEFAULT_CLASSES",
    "DEFAULT_FILTERS",
    "DEFAULT_MAX_BODY_BYTES",
    "GRPC_OVERHEAD_BYTES",
    "RETRY_CONDITIONS",
    "AdmissionConfig",
    "Config",
    "ConsulConfig",
    "CostConfig",
    "DeploymentConfig",
    "EjectionConfig",
    "Endpoint",
    "EnvoyConfig",
    "FailureMode",
    "GatewaySections",
    "HealthCheckConfig",
    "LimitsConfig",
    "ListenerConfig",
    "MetricsSourceConfig",
    "ModelConfig",
    "ModelSchedulingConfig",
    "ObjectiveConfig",
    "PluginRef",
    "PriorityClassConfig",
    "ProfileConfig",
    "RegistryConfig",
    "SchedulingConfig",
    "ScorerRef",
    "SignalsConfig",
    "Timeouts",
    "TimeoutsConfig",
]


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
