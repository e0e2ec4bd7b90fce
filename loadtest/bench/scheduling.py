"""Scheduling-quality scenarios on real vLLM simulators: profiles side by side, one run.

``scripts/bench --scenarios skew,uniform,prefix [--quick] --json FILE``. For each
scenario and each profile (``round_robin``: the default profile; ``least_inflight``;
``gie-default``: the GIE/llm-d default weights; ``default``: ours, ``load-aware``) the
simulators are started fresh (no cache state carried over), the router and Envoy come
up with that profile, and an open-loop client sends streamed chat requests with Poisson
arrivals in bursts. Time to first token is the first SSE chunk's arrival.

* ``skew``: four simulators, one three times slower with a small ``--max-num-seqs``.
* ``uniform``: four identical simulators.
* ``prefix``: eight tenants, each with a long shared system prompt; the simulators'
  own prefix-cache counters give the hit rate.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from extproc.control.signals.prometheus_text import scan, total
from extproc.dev.inference_sim import InferenceSim
from extproc.ops.procs import PORTS
from loadtest.bench.cpu import cpu_seconds, descendants
from loadtest.bench.fleet import fleet_routes, sim_binary, sim_stack
from loadtest.bench.overload import report as overload_report
from loadtest.bench.overload import run_overload
from loadtest.bench.streams import timed_stream

PROFILES = {
    "round_robin": "default",
    "least_inflight": "least-inflight",
    "gie-default": "gie-default",
    "default": "load-aware",
}
"""Result key -> the routing file's profile name."""


@dataclass(frozen=True, slots=True)
class SimSpec:
    ttft_ms: int = 40
    itl_ms: int = 8
    max_num_seqs: int = 16
    time_factor_under_load: float = 2.0
    extra: tuple[str, ...] = ()
    """More simulator flags (the prefix scenario's cache size and prefill time)."""


PREFIX_SIM = SimSpec(
    ttft_ms=0,
    extra=("--kv-cache-size", "96", "--prefill-time-per-token", "0.5ms"),
)
"""A KV cache that holds about two tenants' system prompts, and a prefill that costs
time per uncached token: prefix affinity shows in hit rate and in time to first token."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    sims: tuple[SimSpec, ...]
    rate_rps: float
    """Mean arrival rate; bursts alternate 1.6x and 0.4x of it every ``burst_s``."""
    max_tokens: int = 24
    tenants: int = 0
    """> 0: each request belongs to a tenant with its own long system prompt."""
    burst_s: float = 2.0
    kv_cache: bool = False


SCENARIOS = {
    "skew": Scenario("skew", (SimSpec(),) * 3 + (SimSpec(120, 24, 4),), rate_rps=60),
    "uniform": Scenario("uniform", (SimSpec(),) * 4, rate_rps=60),
    "prefix": Scenario("prefix", (PREFIX_SIM,) * 4, rate_rps=40, tenants=8, kv_cache=True),
}


SCENARIO_NAMES = (*SCENARIOS, "overload")
"""Every scenario ``--scenarios`` knows (``overload``: :mod:`loadtest.bench.overload`)."""


@dataclass
class Run:
    ttft: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    errors: int = 0
    sent: int = 0


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 2)


def prompt(scenario: Scenario, rng: random.Random) -> list[dict[str, str]]:
    question = {"role": "user", "content": f"question {rng.randrange(10**6)}: " + "word " * 20}
    if not scenario.tenants:
        return [question]
    tenant = rng.randrange(scenario.tenants)
    system = f"You are tenant {tenant}'s assistant. Follow these rules carefully. " * 40
    return [{"role": "system", "content": system}, question]


async def one_request(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], run: Run
) -> None:
    status, ttft, e2e = await timed_stream(session, url, body)
    if status != 200:
        run.errors += 1
        return
    run.ttft.append(ttft)
    run.e2e.append(e2e)


async def drive(scenario: Scenario, url: str, duration_s: float, seed: int) -> Run:
    """Open loop: Poisson arrivals, bursting, until ``duration_s``; then wait (bounded)."""
    rng = random.Random(seed)
    run = Run()
    tasks: set[asyncio.Task[None]] = set()
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start = time.monotonic()
        while (now := time.monotonic()) - start < duration_s:
            phase = int((now - start) / scenario.burst_s) % 2
            rate = scenario.rate_rps * (1.6 if phase == 0 else 0.4)
            await asyncio.sleep(rng.expovariate(rate))
            body = {
                "model": "chat", "stream": True, "max_tokens": scenario.max_tokens,
                "messages": prompt(scenario, rng),
            }  # fmt: skip
            task = asyncio.create_task(one_request(session, url, body, run))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            run.sent += 1
        if tasks:
            await asyncio.wait(tasks, timeout=60)
    return run


def routes(sims: list[InferenceSim], profile: str) -> str:
    return fleet_routes(sims, "scheduling scenarios", scheduling={"profile": profile})


async def prefix_counters(sims: list[InferenceSim]) -> tuple[float, float]:
    hits = queries = 0.0
    for s in sims:
        found = scan(await s.metrics(), ("vllm:prefix_cache_hits", "vllm:prefix_cache_queries"))
        hits += total(found.get("vllm:prefix_cache_hits")) or 0.0
        queries += total(found.get("vllm:prefix_cache_queries")) or 0.0
    return hits, queries


async def run_profile(
    scenario: Scenario, key: str, workdir: Path, duration_s: float, seed: int
) -> dict[str, Any]:
    binary = sim_binary()
    sdir = workdir / f"{scenario.name}-{key}"
    sdir.mkdir(parents=True, exist_ok=True)
    sims = []
    for i, spec in enumerate(scenario.sims):
        extra = list(spec.extra)
        if scenario.kv_cache:
            extra += ["--enable-kvcache", "--zmq-endpoint",
                      f"tcp://127.0.0.1:{PORTS.take(1)[0]}"]  # fmt: skip
        sims.append(InferenceSim(
            binary, "chat", name=f"{key}-{i}", log=sdir / f"sim{i}.log",
            ttft_ms=spec.ttft_ms, itl_ms=spec.itl_ms, max_num_seqs=spec.max_num_seqs,
            time_factor_under_load=spec.time_factor_under_load,
            extra=extra,
            env={"POD_IP": "127.0.0.1"} if scenario.kv_cache else None,
        ))  # fmt: skip
    profile = PROFILES[key]
    async with sim_stack(sims, lambda started: routes(started, profile), sdir) as stack:
        assert stack.router is not None
        router_pids = descendants(stack.router.pid)
        hits0, queries0 = await prefix_counters(sims) if scenario.kv_cache else (0.0, 0.0)
        cpu0, t0 = cpu_seconds(router_pids), time.monotonic()
        run = await drive(scenario, stack.url + "/v1/chat/completions", duration_s, seed)
        wall = time.monotonic() - t0
        cpu = cpu_seconds(router_pids) - cpu0
        hits, queries = await prefix_counters(sims) if scenario.kv_cache else (0.0, 0.0)
    done = len(run.e2e)
    return {
        "rps": round(done / wall, 2) if wall else 0.0,
        "requests": run.sent,
        "errors": run.errors,
        "ttft_p50_ms": _pct(run.ttft, 50),
        "ttft_p99_ms": _pct(run.ttft, 99),
        "e2e_p50_ms": _pct(run.e2e, 50),
        "e2e_p99_ms": _pct(run.e2e, 99),
        "ttft_mean_ms": round(statistics.fmean(run.ttft) * 1000, 2) if run.ttft else None,
        "prefix_hit_rate": (
            round((hits - hits0) / (queries - queries0), 3)
            if scenario.kv_cache and queries > queries0
            else None
        ),
        "scheduler_us_per_req": round(cpu / done * 1e6, 1) if done else None,
    }


async def run_scenarios(names: list[str], workdir: Path, quick: bool) -> dict[str, Any]:
    duration = 8.0 if quick else 30.0
    out: dict[str, Any] = {}
    for name in names:
        if name == "overload":
            out[name] = await run_overload(workdir, quick)
            continue
        scenario = SCENARIOS[name]
        profiles: dict[str, Any] = {}
        for key, profile in PROFILES.items():
            print(f"== {name}: {key} ({profile})", flush=True)
            # The same seed for every profile: the same arrivals and prompts.
            res = await run_profile(scenario, key, workdir, duration, seed=1000)
            profiles[key] = res
            print(
                f"  {key:<15} rps {res['rps']:6.1f}  errors {res['errors']:<4} ttft p50 "
                f"{res['ttft_p50_ms']} p99 {res['ttft_p99_ms']} ms  e2e p99 "
                f"{res['e2e_p99_ms']} ms  prefix hit {res['prefix_hit_rate']}  router "
                f"{res['scheduler_us_per_req']} us/req",
                flush=True,
            )
        out[name] = {"profiles": profiles}
    return out


def report(results: dict[str, Any]) -> list[str]:
    """Targets of the load-aware scheduling issue, as ratios within this run."""
    lines = []
    skew = results.get("skew", {}).get("profiles")
    if skew:
        ours, rr, gie = skew["default"], skew["round_robin"], skew["gie-default"]
        for label, other, limit in (("round robin", rr, 0.5), ("gie-default", gie, 0.8)):
            if ours["ttft_p99_ms"] and other["ttft_p99_ms"]:
                ratio = ours["ttft_p99_ms"] / other["ttft_p99_ms"]
                ok = "ok" if ratio <= limit else "MISS"
                lines.append(f"  skew: default p99 TTFT / {label}: {ratio:.2f} (<= {limit}) {ok}")
    uni = results.get("uniform", {}).get("profiles")
    if uni and uni["round_robin"]["ttft_p99_ms"] and uni["default"]["ttft_p99_ms"]:
        ratio = uni["default"]["ttft_p99_ms"] / uni["round_robin"]["ttft_p99_ms"]
        ok = "ok" if ratio <= 1.05 else "MISS"
        lines.append(f"  uniform: default p99 TTFT / round robin: {ratio:.2f} (<= 1.05) {ok}")
    if "overload" in results:
        lines += overload_report(results["overload"])
    return lines
