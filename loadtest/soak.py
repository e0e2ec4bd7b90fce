"""Soak: a mixed workload at a moderate rate for a long time; the router must not degrade.

    python -m loadtest.soak --duration 600 [--rate 40] [--json out.json]

Real Envoy, the router (one worker) and dev model servers, all on loopback. The mix
(weights in ``MIX``): OpenAI chat through the router (plain and streamed), embeddings,
KServe with a spec (router) and without (Envoy routes it natively), ``x-model``
requests, and requests the router must refuse (unknown model, invalid body, spec
violation), each with the status it must get. Every ``--sample-s`` seconds it samples
the router's RSS, open file descriptors and in-flight streams.

Passes (exit 0) when: no request got a status other than its expected one; the router's
RSS grew less than 10% from the end of the warm-up (the first ``--warmup-s``) to the
end; its open file descriptors and in-flight streams stayed flat (after the warm-up,
within a few of their warm-up values; in-flight back to 0 once the load stops).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from extproc.control.loading import parse_config
from extproc.dev.model_servers import ModelServerSpec, run_servers
from extproc.ops.procs import PORTS
from extproc.ops.stack import Stack

RSS_GROWTH_MAX = 0.10
FD_SLACK = 8
"""Open descriptors may differ by this many from the warm-up's (pooled connections)."""


@dataclass(frozen=True)
class Kind:
    name: str
    weight: int
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    status: int
    served: str | None = None
    """The model that must serve a 200 (``x-served-model``)."""


CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello " * 50}]}
MIX = [
    Kind("chat", 30, "/v1/chat/completions", CHAT, {}, 200, "chat"),
    Kind("chat_stream", 10, "/v1/chat/completions", {**CHAT, "stream": True}, {}, 200, "chat"),
    Kind("embed", 10, "/v1/embeddings", {"model": "embed", "input": "x" * 500}, {}, 200, "embed"),
    Kind("kserve_spec", 15, "/v2/models/img/infer",
         {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]},
         {}, 200, "img"),
    Kind("kserve_native", 15, "/v2/models/plain/infer", {"inputs": []}, {}, 200, "plain"),
    Kind("x_model", 10, "/score", {"features": [1, 2, 3]}, {"x-model": "scorer"}, 200, "scorer"),
    Kind("unknown_model", 4, "/v1/chat/completions", {**CHAT, "model": "nope"}, {}, 404),
    Kind("invalid_body", 3, "/v1/chat/completions", {"model": "chat"}, {}, 400),
    Kind("spec_violation", 3, "/v1/chat/completions", {**CHAT, "max_tokens": 100000}, {}, 422),
]  # fmt: skip


def routes(servers: dict[str, str], ports: list[int]) -> str:
    grpc, metrics, listen, admin = ports
    return (
        f"listener: {{port: {grpc}, metrics_port: {metrics}, grace_period_s: 2}}\n"
        f"envoy: {{listen_port: {listen}, admin_port: {admin}}}\n"
        "models:\n"
        "  chat: {protocol: openai, versions: ['1'], spec: {openai: {max_tokens: 4096}}}\n"
        "  embed: {protocol: openai, versions: ['1']}\n"
        "  img: {protocol: kserve_v2, versions: ['1'], spec: {kserve_v2: {inputs: "
        "[{name: x, datatype: FP32, shape: [-1, 2]}]}}}\n"
        "  plain: {protocol: kserve_v2, versions: ['1']}\n"
        "  scorer: {protocol: generic, versions: ['1']}\n"
        "deployments:\n"
        f"  - {{name: chat-a, model: chat, version: '1', endpoints: ['{servers['chat-a']}',"
        f" '{servers['chat-b']}']}}\n"
        f"  - {{name: embed, model: embed, version: '1', endpoints: ['{servers['embed']}']}}\n"
        f"  - {{name: img, model: img, version: '1', endpoints: ['{servers['img']}']}}\n"
        f"  - {{name: plain, model: plain, version: '1', endpoints: ['{servers['plain']}']}}\n"
        f"  - {{name: scorer, model: scorer, version: '1', endpoints: ['{servers['scorer']}'],"
        " health_check: {path: /health}}\n"
    )


def proc_sample(pid: int) -> dict[str, int]:
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return {"rss_kb": rss_kb, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


async def inflight(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as r:
        text = await r.text()
    line = next(ln for ln in text.splitlines() if ln.startswith("model_router_inflight_streams"))
    return int(float(line.split()[-1]))


class Soak:
    def __init__(self, stack: Stack, args: argparse.Namespace, metrics_url: str) -> None:
        self.stack = stack
        self.args = args
        self.metrics_url = metrics_url
        self.statuses: dict[str, Counter[str]] = {k.name: Counter() for k in MIX}
        self.unexpected: Counter[str] = Counter()
        self.samples: list[dict[str, Any]] = []
        self._pending: set[asyncio.Task[None]] = set()

    async def one(self, session: aiohttp.ClientSession, kind: Kind) -> None:
        try:
            async with session.post(
                self.stack.url + kind.path, json=kind.body, headers=kind.headers
            ) as r:
                await r.read()
                got = str(r.status)
                served = r.headers.get("x-served-model")
        except (aiohttp.ClientError, TimeoutError) as exc:
            got, served = type(exc).__name__, None
        self.statuses[kind.name][got] += 1
        if got != str(kind.status) or (kind.served is not None and served != kind.served):
            self.unexpected[f"{kind.name}:{got}:{served}"] += 1

    async def drive(self, session: aiohttp.ClientSession, until: float) -> None:
        """Requests at ``--rate`` per second (open loop), drawn from the mix."""
        rng = random.Random(7)
        weights = [k.weight for k in MIX]
        interval = 1.0 / self.args.rate
        next_at = time.monotonic()
        while time.monotonic() < until:
            kind = rng.choices(MIX, weights)[0]
            task = asyncio.create_task(self.one(session, kind), name=f"soak-{kind.name}")
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if self._pending:
            await asyncio.gather(*self._pending)

    async def sample(self, session: aiohttp.ClientSession, until: float, t0: float) -> None:
        assert self.stack.router is not None
        while time.monotonic() < until:
            s = proc_sample(self.stack.router.pid)
            s["inflight"] = await inflight(session, self.metrics_url)
            s["t"] = round(time.monotonic() - t0, 1)
            self.samples.append(s)
            await asyncio.sleep(self.args.sample_s)

    async def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        until = t0 + self.args.duration
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(self.drive(session, until), self.sample(session, until, t0))
            assert self.stack.router is not None
            end = proc_sample(self.stack.router.pid)
            end["inflight"] = await inflight(session, self.metrics_url)
            end["t"] = round(time.monotonic() - t0, 1)
        return self.verdict(end)

    def verdict(self, end: dict[str, Any]) -> dict[str, Any]:
        warm = [s for s in self.samples if s["t"] >= self.args.warmup_s]
        base = warm[0] if warm else end
        after = warm or [end]
        rss_growth = (end["rss_kb"] - base["rss_kb"]) / base["rss_kb"]
        fd_range = (min(s["fds"] for s in after), max(s["fds"] for s in after))
        inflight_max = max(s["inflight"] for s in after)
        total = sum(sum(c.values()) for c in self.statuses.values())
        failures = []
        if self.unexpected:
            failures.append(f"unexpected answers: {dict(self.unexpected)}")
        if rss_growth >= RSS_GROWTH_MAX:
            failures.append(f"router RSS grew {rss_growth:.1%} after the warm-up")
        if fd_range[1] - base["fds"] > FD_SLACK or end["fds"] - base["fds"] > FD_SLACK:
            failures.append(f"open fds not flat: {base['fds']} at warm-up, range {fd_range}")
        if end["inflight"] != 0:
            failures.append(f"{end['inflight']} streams still in flight after the load")
        return {
            "duration_s": self.args.duration,
            "rate": self.args.rate,
            "requests": total,
            "unexpected": sum(self.unexpected.values()),
            "statuses": {k: dict(v) for k, v in self.statuses.items()},
            "router": {
                "rss_mb_after_warmup": round(base["rss_kb"] / 1024, 1),
                "rss_mb_end": round(end["rss_kb"] / 1024, 1),
                "rss_growth_pct": round(rss_growth * 100, 2),
                "fds_after_warmup": base["fds"],
                "fds_range": list(fd_range),
                "fds_end": end["fds"],
                "inflight_max": inflight_max,
                "inflight_end": end["inflight"],
            },
            "samples": self.samples,
            "failures": failures,
            "ok": not failures,
        }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    specs = [
        ModelServerSpec("chat-a", "openai", "chat", "1", stream_delay_s=0.01),
        ModelServerSpec("chat-b", "openai", "chat", "1", stream_delay_s=0.01),
        ModelServerSpec("embed", "openai", "embed", "1"),
        ModelServerSpec("img", "kserve_v2", "img", "1"),
        ModelServerSpec("plain", "kserve_v2", "plain", "1"),
        ModelServerSpec("scorer", "openai", "scorer", "1"),
    ]
    servers = await run_servers(specs)
    workdir = Path(tempfile.mkdtemp(prefix="model-router-soak-"))
    ports = PORTS.take(4)
    text = routes({s.spec.name: s.address for s in servers}, ports)
    path = workdir / "routes.yaml"
    path.write_text(text)
    stack = Stack(parse_config(text), path, workdir=workdir)
    try:
        await stack.start()
        result = await Soak(stack, args, f"http://127.0.0.1:{ports[1]}/metrics").run()
    finally:
        await stack.stop()
        for s in servers:
            await s.stop()
    if result["ok"]:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        result["logs"] = str(workdir)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    ap.add_argument("--rate", type=float, default=40.0, help="requests per second")
    ap.add_argument("--warmup-s", type=float, default=None, help="default: 25%% of duration")
    ap.add_argument("--sample-s", type=float, default=2.0)
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args()
    if not 1 <= args.duration <= 24 * 3600:
        sys.exit("--duration: 1 s to 24 h")
    if args.warmup_s is None:
        args.warmup_s = min(120.0, args.duration * 0.25)
    result = asyncio.run(main_async(args))
    text = json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
