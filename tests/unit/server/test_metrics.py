"""The router's own metrics: per-deployment counters bounded by the registry, quotas,
process metrics."""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from extproc.server.metrics import Metrics
from tests.unit.helpers import run_flow, state_for

QUOTAS = """
models:
  chat: {protocol: openai, versions: ["1"]}
deployments:
  - {name: chat-a, model: chat, version: "1", endpoints: ["127.0.0.1:8001"], max_inflight: 8}
  - {name: chat-b, model: chat, version: "1", endpoints: ["127.0.0.1:8002"]}
"""
CHAT = orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}]})


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def routed(metrics: Metrics, text: str, n: int) -> None:
    state = state_for(text)
    for _ in range(n):
        flow, _ = run_flow(state, "POST", "/v1/chat/completions", [], CHAT)
        metrics.observe(flow.outcome, decision_s=1e-5, in_router_s=1e-4, body_transfer_s=None)


def test_deployment_requests_and_quotas_follow_the_registry() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    state = state_for(QUOTAS)
    metrics.publish_snapshot(state.snapshot)
    routed(metrics, QUOTAS, 4)
    got = samples(registry)
    by_dep = {
        dict(labels)["deployment"]: value
        for (name, labels), value in got.items()
        if name == "model_router_deployment_requests_total"
    }
    assert by_dep == {"chat-a": 2, "chat-b": 2}  # round robin over both deployments
    quota = {("deployment", "chat-a"), ("model", "chat")}
    assert got[("model_router_deployment_max_inflight", tuple(sorted(quota)))] == 8
    assert not any(
        name == "model_router_deployment_max_inflight" and ("deployment", "chat-b") in labels
        for name, labels in got
    )

    # chat-a leaves the registry: its counter and quota go with it.
    only_b = QUOTAS.replace(
        '  - {name: chat-a, model: chat, version: "1", endpoints: ["127.0.0.1:8001"], max_inflight: 8}\n',
        "",
    )
    metrics.publish_snapshot(state_for(only_b).snapshot)
    after = samples(registry)
    deployments = {
        dict(labels)["deployment"]
        for (name, labels) in after
        if name.startswith("model_router_deployment_")
    }
    assert "chat-a" not in deployments
    key = ("model_router_deployment_requests_total", (("deployment", "chat-b"), ("model", "chat")))
    assert after[key] == 2


def test_process_metrics_are_exported() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    names = {name for name, _ in samples(registry)}
    assert {
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    } <= names


def test_alerted_counters_have_series_before_their_first_event() -> None:
    """An alert on increase(...) of a NACK or a refused reload needs the series at 0 first."""
    registry = CollectorRegistry()
    Metrics(registry)
    got = samples(registry)
    for kind in ("cds", "eds", "rds"):
        assert got[("model_router_xds_nacks_total", (("type", kind),))] == 0
    assert got[("model_router_config_reloads_total", (("result", "error"),))] == 0
    assert got[("model_router_config_reloads_total", (("result", "success"),))] == 0
