"""Admission through real Envoy in front of real vLLM simulators (llm-d-inference-sim):
priority classes under overload, 429s with JSON and Retry-After, latency budgets,
in-flight quotas with two router workers, and the cost-aware profile."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from extproc.dev.inference_sim import InferenceSim, inference_sim_binary
from extproc.ops.stack import Stack
from tests.integration.conftest import StackFactory
from tests.integration.test_signals import metric_values
from tests.support import eventually, http_error

pytestmark = pytest.mark.integration

URL = "/v1/chat/completions"
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@contextlib.asynccontextmanager
async def sims(tmp_path: Path, *specs: dict[str, Any]) -> AsyncIterator[list[InferenceSim]]:
    """One simulator per spec (``InferenceSim`` keyword arguments)."""
    binary = inference_sim_binary()
    if binary is None:
        pytest.skip("no llm-d-inference-sim: run scripts/install-inference-sim")
    started: list[InferenceSim] = []
    try:
        for i, kw in enumerate(specs):
            sim = InferenceSim(binary, "chat", name=f"s{i}", log=tmp_path / f"sim{i}.log", **kw)
            await sim.start()
            started.append(sim)
        yield started
    finally:
        for sim in started:
            await sim.stop()


def routes(deployments: list[dict[str, Any]], profile: str, **extra: Any) -> str:
    doc = {
        "signals": {"scrape_interval_ms": 50},
        "scheduling": {"profile": profile},
        "models": {"chat": {"protocol": "openai", "versions": ["1"]}},
        "deployments": [{"model": "chat", "version": "1", **d} for d in deployments],
        **extra,
    }
    return yaml.safe_dump(doc)


async def post(
    client: httpx.AsyncClient,
    stack: Stack,
    priority: str | None = None,
    content: str = "hi",
    **headers: str,
) -> httpx.Response:
    if priority is not None:
        headers["x-model-router-priority"] = priority
    body = {**CHAT, "messages": [{"role": "user", "content": content}]}
    return await client.post(stack.url + URL, json=body, headers=headers)


async def test_classes_are_shed_in_order_with_json_and_retry_after(
    tmp_path: Path, make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    queued = {"running-requests": 5, "waiting-requests": 6, "kv-cache-usage": 0.3}
    async with sims(tmp_path, {"fake_metrics": queued}, {"fake_metrics": queued}) as s:
        stack = await make_stack(routes(
            [{"name": f"d{i}", "endpoints": [x.address]} for i, x in enumerate(s)], "load-aware",
            admission={"retry_after_s": 3},
        ))  # fmt: skip

        async def sheddable_is_shed() -> httpx.Response:
            r = await post(client, stack, "sheddable")
            assert r.status_code == 429
            return r

        # every queue at 6 (saturation 5): load 1.2
        r = await eventually(sheddable_is_shed, timeout=10, what="sheddable shed")
        assert r.headers["retry-after"] == "3"
        # a reply no model server made carries no routing headers (the request matched
        # the model's fail-open route before the router answered)
        assert not {"x-model-router-deployment", "x-model-router-fail-open"} & set(r.headers)
        assert r.headers["content-type"] == "application/json"
        err = http_error(r)
        assert err["type"] == "overloaded" and "sheddable" in err["message"]
        assert r.json()["error"]["type"] == "rate_limit_error"  # OpenAI's category for 429
        for priority in ("standard", None, "critical"):
            assert (await post(client, stack, priority)).status_code == 200, priority
        for sim in s:  # 10 waiting: load 2.0, past standard's headroom (1.5)
            await sim.set_fake_metrics({**queued, "waiting-requests": 10})

        async def standard_is_shed() -> bool:
            return (await post(client, stack, "standard")).status_code == 429

        await eventually(standard_is_shed, timeout=10, what="standard shed")
        assert (await post(client, stack)).status_code == 429  # the default class
        for _ in range(10):
            assert (await post(client, stack, "critical")).status_code == 200
        bad = await post(client, stack, "urgent")
        assert bad.status_code == 400 and "x-model-router-priority" in bad.text
        metrics = await _metrics(client, stack)
        assert re.search(r'model_router_admission_total\{class="critical",model="chat",'
                         r'result="admitted"\} 1\d\.0', metrics)  # fmt: skip
        assert 'class="sheddable",model="chat",result="shed_load"' in metrics
        assert 'class="standard",model="chat",result="shed_load"' in metrics


async def test_critical_never_shed_under_real_overload(
    tmp_path: Path, make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    slow = {"ttft_ms": 300, "max_num_seqs": 2}
    async with sims(tmp_path, slow, slow) as s:
        stack = await make_stack(routes(
            [{"name": f"d{i}", "endpoints": [x.address]} for i, x in enumerate(s)], "load-aware"
        ))  # fmt: skip
        out: dict[str, Counter[int]] = {"critical": Counter(), "sheddable": Counter()}

        async def client_loop(priority: str) -> None:
            deadline = time.monotonic() + 4  # bounded
            while time.monotonic() < deadline:  # distinct prompts: no prefix affinity
                r = await post(client, stack, priority, f"{random.random()} " * 20)
                out[priority][r.status_code] += 1
                if r.status_code == 429:
                    await asyncio.sleep(0.05)

        # 2 x 2 slots of 300 ms; 24 clients keep ~5 waiting per simulator
        await asyncio.gather(
            *(client_loop("critical") for _ in range(8)),
            *(client_loop("sheddable") for _ in range(16)),
        )
        assert set(out["critical"]) == {200}, out
        assert out["sheddable"][429] > 0 and set(out["sheddable"]) <= {200, 429}, out


async def test_budget_keeps_requests_off_the_slow_endpoint(
    tmp_path: Path, make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    # Far apart (20 ms vs 1.2 s, budget 400 ms): a stall of this shared machine in the
    # fast endpoint's first samples must not push its estimate over the budget.
    async with sims(tmp_path, {"ttft_ms": 20}, {"ttft_ms": 1200}) as s:
        fast, slow = s
        stack = await make_stack(routes(
            [{"name": "fast", "endpoints": [fast.address]},
             {"name": "slow", "endpoints": [slow.address]}], "default",
        ))  # fmt: skip
        seen: Counter[str] = Counter()
        for _ in range(8):  # round robin: both get observed
            seen[(await post(client, stack)).headers["x-model-router-deployment"]] += 1
        assert seen == {"fast": 4, "slow": 4}

        async def latency_known() -> bool:
            return (
                len(await metric_values(client, stack, "model_router_endpoint_ttfb_seconds")) == 2
            )

        await eventually(latency_known, timeout=10, what="both endpoints' TTFB observed")
        for _ in range(8):
            r = await post(client, stack, **{"x-model-router-ttft-budget-ms": "400"})
            assert r.headers["x-model-router-deployment"] == "fast"
            assert "x-model-router-budget-at-risk" not in r.headers
        r = await post(client, stack, **{"x-model-router-ttft-budget-ms": "1"})
        assert r.status_code == 200 and r.headers["x-model-router-budget-at-risk"] == "1"
        assert r.headers["x-model-router-deployment"] == "fast"  # the best of the misses
        bad = await post(client, stack, **{"x-model-router-ttft-budget-ms": "soon"})
        assert bad.status_code == 400
        err = http_error(bad)
        assert err["header"] == "x-model-router-ttft-budget-ms"
        assert err["message"].startswith("header x-model-router-ttft-budget-ms")


async def test_quota_holds_under_concurrency_with_two_workers(
    tmp_path: Path, make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    async with sims(tmp_path, {"ttft_ms": 400, "max_num_seqs": 20}) as (sim,):
        stack = await make_stack(
            routes([{"name": "d0", "endpoints": [sim.address], "max_inflight": 4}], "default"),
            workers=2,
        )
        statuses: Counter[int] = Counter()
        peak = 0
        done = asyncio.Event()

        async def watch() -> None:  # the concurrency the model server sees
            nonlocal peak
            while not done.is_set():
                text = await sim.metrics()
                now = sum(
                    float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith(("vllm:num_requests_running{", "vllm:num_requests_waiting{"))
                )  # fmt: skip
                peak = max(peak, int(now))
                await asyncio.sleep(0.02)

        async def client_loop() -> None:
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                r = await post(client, stack)
                statuses[r.status_code] += 1
                if r.status_code == 429:
                    err = http_error(r)
                    assert err["type"] == "overloaded" and "quota" in err["message"]
                    await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch(), name="watch-sim-concurrency")
        await asyncio.gather(*(client_loop() for _ in range(12)))
        done.set()
        await watcher
        # each worker enforces ceil(4 / 2) = 2: never more than quota + workers - 1
        assert 2 <= peak <= 5, peak
        assert statuses[200] > 0 and statuses[429] > 0 and set(statuses) == {200, 429}
        shed = await metric_values(client, stack, "model_router_admission_total")
        assert sum(shed) == sum(statuses.values())


async def test_cost_aware_uses_the_cheap_deployment_until_quota_or_budget_says_no(
    tmp_path: Path, make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    # The cheap one is slow (800 ms): the burst below is decided while its two are open.
    async with sims(tmp_path, {"ttft_ms": 800}, {"ttft_ms": 20}) as (cheap, dear):
        stack = await make_stack(routes(
            [{"name": "cheap", "endpoints": [cheap.address], "max_inflight": 2,
              "cost": {"per_1k_prompt_tokens": 0.1, "per_1k_completion_tokens": 0.2}},
             {"name": "dear", "endpoints": [dear.address],
              "cost": {"per_request": 0.01, "per_1k_completion_tokens": 2.0}}],
            "cost-aware",
        ))  # fmt: skip
        for _ in range(4):  # one at a time: always the cheap one, though slower
            assert (await post(client, stack)).headers["x-model-router-deployment"] == "cheap"

        async def released() -> bool:  # Envoy's access log has reported the last one done
            return sum(await metric_values(client, stack, "model_router_endpoint_inflight")) == 0

        await eventually(released, timeout=10, what="in-flight counts released")
        # six at once: two fit the cheap quota, the rest go to the dear one
        rs = await asyncio.gather(*(post(client, stack) for _ in range(6)))
        assert Counter(r.headers["x-model-router-deployment"] for r in rs) == {
            "cheap": 2, "dear": 4}  # fmt: skip
        # a budget the cheap one cannot meet (its observed TTFB is ~800 ms)
        r = await post(client, stack, **{"x-model-router-ttft-budget-ms": "150"})
        assert r.headers["x-model-router-deployment"] == "dear"
        spend = await _metrics(client, stack)
        assert 'model_router_estimated_spend_total{deployment="cheap",model="chat"}' in spend
        assert 'model_router_estimated_spend_total{deployment="dear",model="chat"}' in spend


async def _metrics(client: httpx.AsyncClient, stack: Stack) -> str:
    cfg = stack.config.listener
    return (await client.get(f"http://{cfg.host}:{cfg.metrics_port}/metrics")).text
