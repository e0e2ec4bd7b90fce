"""What the Consul watch costs the router: 100 services x 10 instances on a local agent.

Starts a real Consul agent on loopback, registers N services x M instances (each with
a TTL check), starts the router with the Consul registry, and reads the router's CPU
from /proc: while idle (blocking queries parked) and while health churns (K check
flips per second, each one waking a watch and rebuilding the snapshot). Bounded in
time; everything is stopped at the end.

    .venv/bin/python loadtest/consul_watch.py [--services 100] [--instances 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from extproc.dev.consul_agent import ConsulAgent, consul_binary
from extproc.ops.procs import PORTS, ManagedProcess, router_argv, wait_grpc_serving

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def register(agent: ConsulAgent, services: int, instances: int) -> None:
    async with aiohttp.ClientSession(trust_env=False) as s:

        async def one(i: int, j: int) -> None:
            body = {
                "ID": f"svc-{i}-{j}", "Name": f"svc-{i}", "Tags": ["model-router"],
                "Address": "127.0.0.1", "Port": 20000 + j,
                "Meta": {"model": f"svc-{i}", "version": "1", "deployment": f"svc-{i}"},
                "Check": {"CheckID": f"ttl-{i}-{j}", "TTL": "3600s", "Status": "passing"},
            }  # fmt: skip
            async with s.put(f"{agent.url}/v1/agent/service/register", json=body) as r:
                r.raise_for_status()

        for i in range(services):
            await asyncio.gather(*(one(i, j) for j in range(instances)))


async def churn(agent: ConsulAgent, services: int, instances: int, per_s: int, secs: float) -> int:
    rng = random.Random(7)
    flips = 0
    deadline = time.monotonic() + secs
    async with aiohttp.ClientSession(trust_env=False) as s:
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            for _ in range(per_s):
                i, j = rng.randrange(services), rng.randrange(instances)
                status = rng.choice(["pass", "fail"])
                async with s.put(f"{agent.url}/v1/agent/check/{status}/ttl-{i}-{j}") as r:
                    r.raise_for_status()
                flips += 1
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    return flips


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--instances", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--flips-per-s", type=int, default=10)
    args = ap.parse_args()
    binary = consul_binary()
    if binary is None:
        print("no Consul binary: run scripts/install-consul", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="mr-consul-watch-"))
    agent = ConsulAgent(binary, work / "consul")
    router: ManagedProcess | None = None
    try:
        await agent.start()
        t0 = time.monotonic()
        await register(agent, args.services, args.instances)
        print(f"registered {args.services}x{args.instances} in {time.monotonic() - t0:.1f}s")
        port, mport = PORTS.take(2)
        models = "\n".join(
            f"  svc-{i}: {{protocol: openai, versions: ['1']}}" for i in range(args.services)
        )
        routes = work / "routes.yaml"
        routes.write_text(
            f"listener: {{port: {port}, metrics_port: {mport}}}\n"
            f"registry: {{type: consul, consul: {{address: '{agent.address}', wait_s: 30,"
            " startup_timeout_s: 60}}\n"
            f"models:\n{models}\n"
        )
        router = ManagedProcess("router", router_argv(routes), log=work / "router.log")
        t0 = time.monotonic()
        await router.start()
        await wait_grpc_serving(f"127.0.0.1:{port}", timeout_s=120, proc=router)
        synced = time.monotonic() - t0
        await asyncio.sleep(2.0)
        c0 = cpu_seconds(router.pid)
        await asyncio.sleep(args.seconds)
        idle = (cpu_seconds(router.pid) - c0) / args.seconds
        c0, w0 = cpu_seconds(router.pid), time.monotonic()
        flips = await churn(agent, args.services, args.instances, args.flips_per_s, args.seconds)
        wall = time.monotonic() - w0
        busy = (cpu_seconds(router.pid) - c0) / wall
        result = {
            "services": args.services,
            "instances": args.services * args.instances,
            "startup_to_serving_s": round(synced, 2),
            "idle_cpu_pct_of_core": round(idle * 100, 2),
            "churn_flips_per_s": round(flips / wall, 1),
            "churn_cpu_pct_of_core": round(busy * 100, 2),
            "churn_cpu_ms_per_flip": round(busy * wall / max(flips, 1) * 1000, 2),
        }
        print(json.dumps(result, indent=2))
        return 0
    finally:
        if router is not None:
            await router.stop()
        await agent.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
