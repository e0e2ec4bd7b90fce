"""The ``overload`` scenario: twice the fleet's capacity, mixed priorities, one run.

``scripts/bench --scenarios overload [--quick] --json FILE``. Four llm-d-inference-sim
simulators with four slots each and a fixed service time (``--time-factor-under-load
1``; every request asks for exactly ``MAX_TOKENS`` tokens with ``ignore_eos``), so the
fleet's capacity is known: ``4 x 4 slots / service time``. An open-loop client offers
twice that (Poisson arrivals), 20 % ``critical``, 60 % ``standard`` and 20 %
``sheddable``, each request carrying its class and its class's time-to-first-token
budget as headers. Three profiles, on fresh simulators each, with the same arrivals:

* ``round_robin``: the default profile, admission off.
* ``load_aware``: the ``load-aware`` profile, admission off (every class alike).
* ``admission``: ``load-aware`` with admission on (default classes: sheddable shed at
  saturation, standard at 1.5x, critical never; budgets from the headers).

Per profile and class: served, shed (429), p99 time to first token of the served, and
the budget; goodput is requests served within their class's budget per second of the
offered load. A shed request is not good, but costs the fleet nothing.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from extproc.dev.inference_sim import InferenceSim
from loadtest.bench.fleet import fleet_routes, sim_binary, sim_stack
from loadtest.bench.streams import timed_stream

SIMS = 4
SLOTS = 4
TTFT_MS = 100
ITL_MS = 10
MAX_TOKENS = 20
SERVICE_S = (TTFT_MS + (MAX_TOKENS - 1) * ITL_MS) / 1000
CAPACITY_RPS = SIMS * SLOTS / SERVICE_S
OFFERED = 2.0
CLASSES = {"critical": 0.2, "standard": 0.6, "sheddable": 0.2}
BUDGET_MS = {"critical": 1000, "standard": 3000, "sheddable": 3000}
PROFILES = {"round_robin": "default", "load_aware": "load-aware", "admission": "load-aware"}


@dataclass
class ClassRun:
    ttft: list[float] = field(default_factory=list)
    shed: int = 0
    errors: int = 0
    sent: int = 0
    good: int = 0


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 1)


async def _one(
    session: aiohttp.ClientSession, url: str, cls: str, body: dict[str, Any], run: ClassRun
) -> None:
    headers = {
        "x-model-router-priority": cls,
        "x-model-router-ttft-budget-ms": str(BUDGET_MS[cls]),
    }
    status, ttft, _ = await timed_stream(session, url, body, headers)
    if status == 429:
        run.shed += 1
    elif status != 200:
        run.errors += 1
    else:
        run.ttft.append(ttft)
        run.good += ttft * 1000 <= BUDGET_MS[cls]


async def drive(url: str, duration_s: float, seed: int) -> dict[str, ClassRun]:
    rng = random.Random(seed)
    runs = {c: ClassRun() for c in CLASSES}
    names, weights = list(CLASSES), list(CLASSES.values())
    tasks: set[asyncio.Task[None]] = set()
    rate = CAPACITY_RPS * OFFERED
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        start = time.monotonic()
        while time.monotonic() - start < duration_s:
            await asyncio.sleep(rng.expovariate(rate))
            cls = rng.choices(names, weights)[0]
            body = {
                "model": "chat", "stream": True, "max_tokens": MAX_TOKENS, "ignore_eos": True,
                "messages": [{"role": "user", "content": f"q{rng.randrange(10**9)} " * 8}],
            }  # fmt: skip
            task = asyncio.create_task(_one(session, url, cls, body, runs[cls]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            runs[cls].sent += 1
        if tasks:
            await asyncio.wait(tasks, timeout=90)  # bounded drain
    return runs


def routes(sims: list[InferenceSim], key: str) -> str:
    return fleet_routes(
        sims,
        "overload scenario",
        scheduling={"profile": PROFILES[key]},
        admission={"enabled": key == "admission"},
    )


async def run_profile(key: str, workdir: Path, duration_s: float, seed: int) -> dict[str, Any]:
    binary = sim_binary()
    sdir = workdir / f"overload-{key}"
    sdir.mkdir(parents=True, exist_ok=True)
    sims = [
        InferenceSim(
            binary,
            "chat",
            name=f"{key}-{i}",
            log=sdir / f"sim{i}.log",
            ttft_ms=TTFT_MS,
            itl_ms=ITL_MS,
            max_num_seqs=SLOTS,
            time_factor_under_load=1.0,
        )
        for i in range(SIMS)
    ]
    async with sim_stack(sims, lambda started: routes(started, key), sdir) as stack:
        runs = await drive(stack.url + "/v1/chat/completions", duration_s, seed)
    classes = {
        c: {
            "ttft_p99_ms": _p99(r.ttft),
            "budget_ms": BUDGET_MS[c],
            "shed": r.shed,
            "served": len(r.ttft),
            "within_budget": r.good,
            "sent": r.sent,
        }
        for c, r in runs.items()
    }
    return {
        "classes": classes,
        "goodput_rps": round(sum(r.good for r in runs.values()) / duration_s, 2),
        "errors_other_than_429": sum(r.errors for r in runs.values()),
        "offered_rps": round(CAPACITY_RPS * OFFERED, 1),
        "capacity_rps": round(CAPACITY_RPS, 1),
    }


async def run_overload(workdir: Path, quick: bool) -> dict[str, Any]:
    duration = 10.0 if quick else 30.0
    profiles: dict[str, Any] = {}
    for key in PROFILES:
        print(f"== overload: {key}", flush=True)
        res = await run_profile(key, workdir, duration, seed=2000)
        profiles[key] = res
        per = "  ".join(
            f"{c} p99 {v['ttft_p99_ms']} ms shed {v['shed']}/{v['sent']}"
            for c, v in res["classes"].items()
        )
        print(
            f"  {key:<12} goodput {res['goodput_rps']} rps  errors "
            f"{res['errors_other_than_429']}  {per}",
            flush=True,
        )
    return {"profiles": profiles}


def report(result: dict[str, Any]) -> list[str]:
    """The overload scenario's targets, within this run."""
    p = result.get("profiles", {})
    adm, rr = p.get("admission"), p.get("round_robin")
    if not adm or not rr:
        return []
    crit = adm["classes"]["critical"]
    lines = []
    ok = crit["ttft_p99_ms"] is not None and crit["ttft_p99_ms"] <= crit["budget_ms"]
    lines.append(
        f"  overload: critical p99 TTFT {crit['ttft_p99_ms']} ms (budget {crit['budget_ms']}) "
        + ("ok" if ok else "MISS")
    )
    ratio = adm["goodput_rps"] / rr["goodput_rps"] if rr["goodput_rps"] else float("inf")
    lines.append(
        f"  overload: goodput admission / round robin: {ratio:.2f} (>= 1) "
        + ("ok" if ratio >= 1 else "MISS")
    )
    errs = adm["errors_other_than_429"]
    lines.append(f"  overload: errors other than 429: {errs} " + ("ok" if errs == 0 else "MISS"))
    return lines
