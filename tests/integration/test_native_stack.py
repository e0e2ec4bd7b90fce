"""docker-compose.yml's topology run natively from the same files (``model-router stack``):
Consul, two llm-d-inference-sim, KServe's ModelServer, the router (2 workers), Envoy and
Debian's Prometheus. Prometheus loads deploy/prometheus and scrapes every target; every
metric the dashboard and the alert rules query is in its scrapes; Envoy's access log and
the router's log join on x-request-id."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from extproc.dev.native_stack import NativeStack, binaries
from tests.deploy import (
    DEPLOY,
    compose_config,
    dashboard_queries,
    promql_metric_names,
    rule_expressions,
)
from tests.support import ROOT, eventually

pytestmark = pytest.mark.integration

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "Hello"}]}
FRAUD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
# Every target of deploy/prometheus/targets: 2 router workers, Envoy, 2 sims, KServe.
TARGETS = {"model-router": 2, "envoy": 1, "model-servers": 3}


@pytest.fixture(scope="module")
async def native(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NativeStack]:
    missing = [name for name, found in binaries().items() if found is None]
    if missing:
        pytest.skip(f"the native stack needs {', '.join(missing)}")
    stack = NativeStack(ROOT, tmp_path_factory.mktemp("stack"), log_level="debug")
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()


async def prometheus(native: NativeStack, api: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=native.prometheus_url, timeout=10) as client:
        resp = await client.get(f"/api/v1/{api}", params=params)
    resp.raise_for_status()
    body = resp.json()
    assert body["status"] == "success", body
    return body["data"]


async def test_the_three_readme_requests_route(native: NativeStack) -> None:
    async with httpx.AsyncClient(base_url=native.envoy_url, timeout=30) as client:
        chat = await client.post("/v1/chat/completions", json=CHAT)
        assert chat.status_code == 200, chat.text
        assert chat.headers["x-model-router-deployment"] == "chat-sims"
        assert chat.json()["choices"][0]["message"]["content"]
        fraud = await client.post("/v2/models/fraud/infer", json=FRAUD)
        assert fraud.status_code == 200, fraud.text
        assert fraud.headers["x-model-router-deployment"] == "fraud-kserve"
        assert fraud.json()["outputs"][0]["data"] == [1.0, 2.0]
        unknown = await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-9"})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "model_not_found"


async def test_prometheus_loads_the_compose_config_and_scrapes_every_target_up(
    native: NativeStack,
) -> None:
    async def all_up() -> list[dict[str, Any]]:
        targets = (await prometheus(native, "targets"))["activeTargets"]
        by_job: dict[str, int] = {}
        for t in targets:
            assert t["health"] == "up", (t["scrapeUrl"], t["lastError"])
            by_job[t["labels"]["job"]] = by_job.get(t["labels"]["job"], 0) + 1
        assert by_job == TARGETS
        return list(targets)

    targets = await eventually(all_up, timeout=120, interval=1, what="every target up")
    services = {t["labels"]["service"] for t in targets}
    assert services == {"router", "envoy", "llm-d-inference-sim", "kserve"}

    groups = (await prometheus(native, "rules"))["groups"]
    loaded = {r["name"]: r["health"] for g in groups for r in g["rules"]}
    assert loaded == dict.fromkeys(rule_expressions(), "ok")

    # What the stack ran is what compose mounts (Envoy's bootstrap is the same rendering
    # of deploy/routes.yaml with loopback ports: test_deploy_files.py; Grafana is not run).
    mounted = {
        Path(v["source"])
        for s in compose_config()["services"].values()
        for v in s.get("volumes", [])
        if v["type"] == "bind"
    }
    not_run_here = {DEPLOY / "envoy.yaml"} | {p for p in mounted if "grafana" in p.parts}
    assert mounted - not_run_here <= set(native.loaded)


async def test_every_metric_the_dashboard_and_alerts_query_is_scraped(
    native: NativeStack,
) -> None:
    names = {
        n for exprs in dashboard_queries().values() for e in exprs for n in promql_metric_names(e)
    }
    names |= {n for e in rule_expressions().values() for n in promql_metric_names(e)}
    async with httpx.AsyncClient(base_url=native.envoy_url, timeout=30) as client:
        for _ in range(3):  # traffic, so per-request series exist
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
            assert (await client.post("/v2/models/fraud/infer", json=FRAUD)).status_code == 200

    async def missing() -> bool:
        absent = []
        for name in sorted(names):
            if not await prometheus(native, "series", **{"match[]": name}):
                absent.append(name)
        assert not absent, f"queried but not scraped: {absent}"
        return True

    await eventually(missing, timeout=120, interval=2, what="every queried metric scraped")

    # And every panel shows something: a label filter or a name that matches nothing
    # (Envoy's cluster tag stopping at a dot...) would pass the name check above.
    async def empty_panels() -> bool:
        empty = []
        for title, exprs in dashboard_queries().items():
            for expr in exprs:
                query = expr.replace("$__rate_interval", "20s")
                if not (await prometheus(native, "query", query=query))["result"]:
                    empty.append(f"{title}: {expr}")
        assert not empty, f"panels without data: {empty}"
        return True

    await eventually(empty_panels, timeout=120, interval=2, what="every panel has data")


async def test_envoy_access_log_and_router_log_join_on_request_id(native: NativeStack) -> None:
    assert native.stack is not None and native.stack.envoy and native.stack.router
    envoy_log, router_log = native.stack.envoy.log, native.stack.router.log
    assert envoy_log is not None and router_log is not None
    async with httpx.AsyncClient(base_url=native.envoy_url, timeout=30) as client:
        routed = await client.post(
            "/v1/chat/completions", json=CHAT, headers={"x-request-id": "join-routed-1"}
        )
        rejected = await client.post(
            "/v1/chat/completions",
            json={**CHAT, "messages": []},
            headers={"x-request-id": "join-bad-1"},
        )
    assert routed.status_code == 200 and rejected.status_code == 400

    def lines(path: Path, rid: str) -> list[dict[str, Any]]:
        out = []
        for line in path.read_text().splitlines():
            if line.startswith("{") and f'"{rid}"' in line:
                out.append(json.loads(line))
        return out

    def joined() -> tuple[list[dict[str, Any]], ...]:
        got = tuple(
            lines(p, rid)
            for rid in ("join-routed-1", "join-bad-1")
            for p in (envoy_log, router_log)
        )
        assert all(got), [len(g) for g in got]
        return got

    envoy_routed, router_routed, envoy_bad, router_bad = await eventually(
        joined, timeout=30, what="both logs have both requests"
    )
    (e,) = envoy_routed
    assert e["code"] == 200 and e["served_model"] == "chat"
    assert e["upstream_cluster"] == "deployment_chat-sims"  # its alt_stat_name
    (r,) = [x for x in router_routed if x["msg"] == "request routed"]
    assert r["deployment"] == "chat-sims" and r["model"] == "chat"
    # The endpoint the router picked first is the one Envoy was told and sent it to.
    assert e["picked_endpoint"].split(",")[0] == r["endpoint"] == e["upstream_host"]
    (e,) = envoy_bad
    assert e["code"] == 400 and e["error"] == "invalid_request"
    (r,) = router_bad
    assert r["msg"] == "request rejected" and r["status"] == 400
    assert r["error_type"] == e["error"]


def test_healthcheck_command_sees_a_serving_worker(native: NativeStack) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "extproc", "healthcheck", "--address", native.where("router:50051")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
