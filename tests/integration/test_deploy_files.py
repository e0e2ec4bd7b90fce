"""The compose stack's files checked by the real programs that read them: docker compose
(v2, built from the Go module proxy by scripts/install-compose), promtool, Envoy.
Prometheus loading them and scraping every target: test_native_stack.py."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from extproc.control.loading import load_config
from extproc.ops.envoy_config import render_bootstrap
from extproc.ops.procs import envoy_binary
from tests.deploy import (
    DASHBOARD,
    DEPLOY,
    compose_binary,
    compose_config,
    dashboard_queries,
    promql_metric_names,
    rule_expressions,
    run,
    tool,
)
from tests.support import ROOT

pytestmark = pytest.mark.integration


def test_compose_file_validates_with_docker_compose() -> None:
    proc = run([compose_binary(), "-f", ROOT / "docker-compose.yml", "config", "--quiet"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no warning (obsolete keys, unset variables...)


def test_compose_mounts_exist_and_builds_name_dockerfile_stages() -> None:
    services = compose_config()["services"]
    assert {"consul", "envoy", "router", "kserve", "prometheus", "grafana"} <= set(services)
    assert sum(1 for s in services.values() if "llm-d-inference-sim" in s.get("image", "")) >= 2
    mounted = {
        v["source"] for s in services.values() for v in s.get("volumes", []) if v["type"] == "bind"
    }
    assert mounted == {
        str(DEPLOY / p)
        for p in (
            "consul/services.json",
            "envoy.yaml",
            "routes.yaml",
            "prometheus",
            "grafana/provisioning",
            "grafana/dashboards",
        )
    }
    assert all((ROOT / p).exists() for p in mounted)
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.MULTILINE))
    for name in ("router", "kserve"):
        assert services[name]["build"]["target"] in stages
    # Runtime stages run unprivileged and carry a health check.
    for stage in dockerfile.split("\nFROM ")[2:]:
        assert re.search(r"^USER [1-9]\d*:", stage, re.MULTILINE), stage[:80]
        assert "HEALTHCHECK" in stage, stage[:80]


def test_compose_envoy_bootstrap_is_the_rendering_of_its_routing_file_and_validates() -> None:
    loaded = load_config(DEPLOY / "routes.yaml")
    assert (DEPLOY / "envoy.yaml").read_text() == render_bootstrap(loaded), (
        "regenerate: model-router envoy-config --config deploy/routes.yaml > deploy/envoy.yaml"
    )
    proc = run([envoy_binary(), "--mode", "validate", "-c", DEPLOY / "envoy.yaml"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    bootstrap = yaml.safe_load((DEPLOY / "envoy.yaml").read_text())
    # Every cluster that reaches the router finds it by its compose service name.
    to_router = [
        c
        for c in bootstrap["static_resources"]["clusters"]
        if "router" in json.dumps(c.get("load_assignment", {}))
    ]
    assert to_router and all(c["type"] == "STRICT_DNS" for c in to_router)


def test_prometheus_config_and_rules_pass_promtool() -> None:
    promtool = tool("promtool")
    here = DEPLOY / "prometheus"
    for argv in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "rules/model-router.yml"],
        ["test", "rules", "tests/model-router.test.yml"],
    ):
        proc = run([promtool, *argv], cwd=here)
        assert proc.returncode == 0, f"promtool {' '.join(argv)}:\n{proc.stdout}{proc.stderr}"
        assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_promtool_test_that_fires_it() -> None:
    tests = yaml.safe_load((DEPLOY / "prometheus" / "tests" / "model-router.test.yml").read_text())
    fired = {
        check["alertname"]
        for case in tests["tests"]
        for check in case.get("alert_rule_test", [])
        if check.get("exp_alerts")
    }
    assert set(rule_expressions()) <= fired
    for required in ("ModelRouterDown", "ModelRouterRegistryStale", "ModelRouterErrorRatio"):
        assert required in fired
    for required in ("ModelRouterShedding", "ModelRouterFailOpen", "ModelRouterQuotaExhausted"):
        assert required in fired


def test_dashboard_uses_the_provisioned_data_source_and_every_panel_queries() -> None:
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uids = {d["uid"] for d in provisioned["datasources"]}
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
    for title, exprs in dashboard_queries().items():
        assert all(promql_metric_names(e) for e in exprs), title


def test_promql_metric_names() -> None:
    expr = (
        'sum by (le, phase) (rate(model_router_phase_duration_seconds_bucket{path="x"}'
        "[$__rate_interval])) / on (deployment) group_left max by (deployment) (vllm:num_requests_running)"
        ' > bool 1e-9 and absent(up{job="a b"})'
    )
    assert promql_metric_names(expr) == {
        "model_router_phase_duration_seconds_bucket",
        "vllm:num_requests_running",
        "up",
    }
