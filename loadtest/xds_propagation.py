"""How long a registry change takes to reach Envoy through the router's xDS.

Two kinds of change, each flipped ``--flips`` times, timed from the change to the moment
Envoy's admin ``/clusters`` shows it (polled every 2 ms):

* ``reload``: the routing file gains or loses an endpoint, then SIGHUP;
* ``consul``: a Consul instance enters or leaves maintenance (the router's blocking
  query returns at once; no health-check interval in the way).

    python -m loadtest.xds_propagation [--flips 20] [--no-consul]

Real Envoy, real Consul (``$CONSUL_BIN`` or ``scripts/install-consul``), the router and
two dev KServe servers, all on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from extproc.control.loading import parse_config
from extproc.dev.consul_agent import ConsulAgent, consul_binary
from extproc.dev.model_servers import ModelServerSpec, run_servers
from extproc.ops.envoy_config import EnvoyPorts
from extproc.ops.procs import PORTS
from extproc.ops.stack import Stack


async def envoy_endpoints(session: aiohttp.ClientSession, admin: str, cluster: str) -> set[str]:
    async with session.get(admin + "/clusters") as r:
        text = await r.text()
    return {
        p[1]
        for line in text.splitlines()
        if (p := line.split("::"))[0] == cluster and len(p) >= 3 and p[2] == "cx_total"
    }


async def until(
    session: aiohttp.ClientSession, admin: str, cluster: str, want: set[str], t0: float
) -> float:
    deadline = t0 + 30
    while time.monotonic() < deadline:
        if await envoy_endpoints(session, admin, cluster) == want:
            return time.monotonic() - t0
        await asyncio.sleep(0.002)
    raise TimeoutError(f"{cluster} never became {sorted(want)}")


def head(listen: int, admin: int, grpc: int) -> str:
    return (
        f"listener: {{port: {grpc}, metrics_port: 0, grace_period_s: 1}}\n"
        f"envoy: {{listen_port: {listen}, admin_port: {admin}}}\n"
    )


async def measure_reload(workdir: Path, a: str, b: str, flips: int) -> list[float]:
    listen, admin, grpc = PORTS.take(3)
    body = (
        "models: {kmodel: {protocol: kserve_v2, versions: ['1']}}\n"
        "deployments: [{name: k1, model: kmodel, version: '1', endpoints: [%s]}]\n"
    )
    one, two = body % f"'{a}'", body % f"'{a}', '{b}'"
    path = workdir / "reload.yaml"
    path.write_text(head(listen, admin, grpc) + one)
    config = parse_config(path.read_text())
    stack = Stack(config, path, workdir=workdir / "reload", ports=EnvoyPorts.from_config(config))
    await stack.start()
    times = []
    try:
        async with aiohttp.ClientSession(trust_env=False) as session:
            for i in range(flips):
                text, want = (two, {a, b}) if i % 2 == 0 else (one, {a})
                path.write_text(head(listen, admin, grpc) + text)
                t0 = time.monotonic()
                assert stack.router is not None
                stack.router.signal(signal.SIGHUP)
                times.append(await until(session, stack.admin_url, "deployment.k1", want, t0))
    finally:
        await stack.stop()
    return times


async def measure_consul(workdir: Path, a_port: int, b_port: int, flips: int) -> list[float]:
    binary = consul_binary()
    if binary is None:
        raise SystemExit("no Consul: set CONSUL_BIN or run scripts/install-consul")
    agent = ConsulAgent(binary, workdir / "consul")
    await agent.start()
    listen, admin, grpc = PORTS.take(3)
    try:
        await agent.wait_leader()
        for sid, port in (("k-a", a_port), ("k-b", b_port)):
            await agent.register(sid, "kmodel", port, {"version": "1", "deployment": "k1"})
        path = workdir / "consul.yaml"
        path.write_text(
            head(listen, admin, grpc)
            + f"registry: {{type: consul, consul: {{address: '{agent.address}', wait_s: 30}}}}\n"
            + "models: {kmodel: {protocol: kserve_v2, versions: ['1']}}\n"
        )
        config = parse_config(path.read_text())
        stack = Stack(config, path, workdir=workdir / "cs", ports=EnvoyPorts.from_config(config))
        await stack.start()
        a, b = f"127.0.0.1:{a_port}", f"127.0.0.1:{b_port}"
        times = []
        try:
            async with aiohttp.ClientSession(trust_env=False) as session:
                await until(session, stack.admin_url, "deployment.k1", {a, b}, time.monotonic())
                for i in range(flips):
                    enable = i % 2 == 0
                    t0 = time.monotonic()
                    await agent.maintenance("k-b", enable)
                    want = {a} if enable else {a, b}
                    times.append(await until(session, stack.admin_url, "deployment.k1", want, t0))
        finally:
            await stack.stop()
        return times
    finally:
        await agent.stop()


def summary(name: str, times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return (
        f"{name:<7} n={len(ms):<3} p50 {statistics.median(ms):7.1f} ms   "
        f"max {ms[-1]:7.1f} ms   min {ms[0]:7.1f} ms"
    )


async def amain(flips: int, consul: bool) -> int:
    servers = await run_servers(
        [ModelServerSpec("k-a", "kserve_v2", "kmodel", "1"),
         ModelServerSpec("k-b", "kserve_v2", "kmodel", "1")]
    )  # fmt: skip
    try:
        with tempfile.TemporaryDirectory(prefix="xds-propagation-") as tmp:
            work = Path(tmp)
            a, b = servers[0].address, servers[1].address
            print(summary("reload", await measure_reload(work, a, b, flips)), flush=True)
            if consul:
                times = await measure_consul(work, servers[0].port, servers[1].port, flips)
                print(summary("consul", times), flush=True)
    finally:
        for s in servers:
            await s.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flips", type=int, default=20)
    p.add_argument("--no-consul", action="store_true", help="only the routing-file reload")
    a = p.parse_args(argv)
    return asyncio.run(amain(a.flips, not a.no_consul))


if __name__ == "__main__":
    sys.exit(main())
