"""CDS and EDS: one Envoy cluster per deployment, its endpoints from the registry snapshot.

Every cluster balances with ``override_host``: the endpoint list the router put in
``x-gateway-destination-endpoint`` (primary first) is tried in order on Envoy's
retries; hosts of other deployments are skipped; when the list is used up Envoy's own
round robin picks inside the deployment. Outlier detection ejects a failing endpoint
(never more than half of a deployment); routing-file endpoints are also actively health
checked (Consul's checks already decide for Consul endpoints).
"""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.load_balancing_policies.override_host.v3 import override_host_pb2  # noqa: F401
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2  # noqa: F401
from google.protobuf import json_format

from extproc.control.schema import Config, HealthCheckConfig
from extproc.core.envoy_wire import DESTINATION_HEADER, cluster_name, cluster_stat_name
from extproc.core.snapshot import Deployment, Snapshot

METADATA_NAMESPACE = "model_router"
"""Cluster and endpoint metadata with the deployment's model, version and name. Routes
read the endpoint's (``%UPSTREAM_METADATA%``) for the response headers, so a reply
Envoy or the router makes without an upstream (an error) carries none of them; every
endpoint also has ``upstream: "1"`` for the fail-open marker."""

DEFAULT_HEALTH_PATHS = {"openai": "/health", "kserve_v2": "/v2/health/ready"}
_ADS = {"ads": {}, "resource_api_version": "V3"}
_HIGH = 100000


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def _health_checks(hc: HealthCheckConfig, protocol: str) -> list[dict[str, Any]]:
    path = hc.path or DEFAULT_HEALTH_PATHS.get(protocol)
    if not hc.enabled or path is None:
        return []
    return [
        {
            "timeout": _seconds(hc.timeout_s),
            "interval": _seconds(hc.interval_s),
            "no_traffic_interval": _seconds(hc.interval_s),  # default 60 s: too slow here
            "unhealthy_threshold": hc.unhealthy_threshold,
            "healthy_threshold": hc.healthy_threshold,
            "http_health_check": {"path": path},
        }
    ]


def deployment_cluster(
    dep: Deployment,
    protocol: str,
    health: HealthCheckConfig | None,
    connect_timeout_s: float = 2.0,
) -> cluster_pb2.Cluster:
    """The cluster of one deployment (``health`` None: no active health check)."""
    name = cluster_name(dep.name)
    spec: dict[str, Any] = {
        "name": name,
        "alt_stat_name": cluster_stat_name(dep.name),
        "type": "EDS",
        "eds_cluster_config": {"eds_config": _ADS, "service_name": name},
        "connect_timeout": _seconds(connect_timeout_s),
        "load_balancing_policy": {
            "policies": [
                {
                    "typed_extension_config": {
                        "name": "envoy.load_balancing_policies.override_host",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.load_balancing_"
                            "policies.override_host.v3.OverrideHost",
                            "override_host_sources": [{"header": DESTINATION_HEADER}],
                            "fallback_policy": {
                                "policies": [
                                    {
                                        "typed_extension_config": {
                                            "name": "envoy.load_balancing_policies.round_robin",
                                            "typed_config": {
                                                "@type": "type.googleapis.com/envoy.extensions."
                                                "load_balancing_policies.round_robin.v3."
                                                "RoundRobin"
                                            },
                                        }
                                    }
                                ]
                            },
                        },
                    }
                }
            ]
        },
        # LLM serving: many concurrent long requests per endpoint; retries walk fallbacks.
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": _HIGH,
                    "max_pending_requests": _HIGH,
                    "max_requests": _HIGH,
                    "max_retries": _HIGH,
                }
            ]
        },
        "outlier_detection": {
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 2,
            "consecutive_5xx": 5,
            "interval": "1s",
            "base_ejection_time": "10s",
            "max_ejection_percent": 50,
            "successful_active_health_check_uneject_host": False,
        },
        "ignore_health_on_host_removal": True,
        "metadata": {"filter_metadata": {METADATA_NAMESPACE: dict(_identity(dep))}},
    }
    checks = _health_checks(health, protocol) if health is not None else []
    if checks:
        spec["health_checks"] = checks
    return json_format.ParseDict(spec, cluster_pb2.Cluster())


def deployment_endpoints(dep: Deployment) -> endpoint_pb2.ClusterLoadAssignment:
    """The deployment's endpoints the registry has (unhealthy Consul instances are not).

    A disabled or zero-weight deployment keeps its endpoints here: the router stops
    picking it and native routes leave it out, while requests already decided on it
    finish where they were sent.
    """
    name = cluster_name(dep.name)
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    if not dep.endpoints:
        return cla
    group = cla.endpoints.add()
    for ep in dep.endpoints:
        host, _, port = ep.address.rpartition(":")
        lb = group.lb_endpoints.add()
        sa = lb.endpoint.address.socket_address
        sa.address = host.strip("[]")
        sa.port_value = int(port)
        lb.load_balancing_weight.value = max(ep.weight, 1)
        fields = lb.metadata.filter_metadata[METADATA_NAMESPACE].fields
        for key, value in (*_identity(dep), ("upstream", "1")):
            fields[key].string_value = value
    return cla


def _identity(dep: Deployment) -> tuple[tuple[str, str], ...]:
    return (("model", dep.model), ("version", dep.version), ("deployment", dep.name))


def build_clusters(
    config: Config, snapshot: Snapshot
) -> tuple[dict[str, cluster_pb2.Cluster], dict[str, endpoint_pb2.ClusterLoadAssignment]]:
    """CDS and EDS resources for every deployment in ``snapshot``, by cluster name."""
    checked = {d.name: d.health_check for d in config.deployments}
    actively_checked = config.registry.type == "static"
    clusters: dict[str, cluster_pb2.Cluster] = {}
    endpoints: dict[str, endpoint_pb2.ClusterLoadAssignment] = {}
    for model in snapshot.models.values():
        for dep in model.deployments:
            health = checked.get(dep.name, HealthCheckConfig()) if actively_checked else None
            connect_s = config.timeouts_of(model.name).connect_s
            c = deployment_cluster(dep, model.protocol, health, connect_s)
            clusters[c.name] = c
            endpoints[c.name] = deployment_endpoints(dep)
    return clusters, endpoints
