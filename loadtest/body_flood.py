"""Big bodies flooding the router while small requests keep coming: what each gets.

``--flood`` concurrent k6 clients each send ``--size``-byte chat bodies back to back for
``--seconds``; meanwhile small chat requests arrive at ``--small-rate`` per second.
Reports the status counts of both (200s by the model that served them) and latency
percentiles (k6, ``loadtest/k6/flood.js``).

    python -m loadtest.body_flood [--seconds 10] [--flood 60] [--size 900000]
        [--mode closed|open] [--message-timeout-ms 1000] [--profile out.svg]

Real Envoy, the router (one worker) and two dev OpenAI servers, all on loopback.
``--profile`` records the router with py-spy during the flood (``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from extproc.control.loading import parse_config
from extproc.dev.model_servers import ModelServerSpec, run_servers
from extproc.ops.procs import PORTS, ManagedProcess
from extproc.ops.stack import Stack

K6_SCRIPT = Path(__file__).parent / "k6" / "flood.js"
SMALL = {"model": "chat-a", "messages": [{"role": "user", "content": "hello"}]}


def big_body(size: int) -> bytes:
    pad = "x" * max(0, size - 80)
    return json.dumps({"model": "chat-b", "messages": [{"role": "user", "content": pad}]}).encode()


def routes(a: str, b: str, ports: list[int], args: argparse.Namespace) -> str:
    grpc, metrics, listen, admin = ports
    native = ", native: true" if args.small_native else ""
    return (
        f"listener: {{port: {grpc}, metrics_port: {metrics}, grace_period_s: 1}}\n"
        f"envoy: {{listen_port: {listen}, admin_port: {admin},"
        f" message_timeout_ms: {args.message_timeout_ms}}}\n"
        f"failure_mode: {args.mode}\n"
        f"limits: {{max_concurrent_large_bodies: {args.large_limit}}}\n"
        "models:\n"
        f"  chat-a: {{protocol: openai, versions: ['1']{native}}}\n"
        "  chat-b: {protocol: openai, versions: ['1']}\n"
        "deployments:\n"
        f"  - {{name: a, model: chat-a, version: '1', endpoints: ['{a}']}}\n"
        f"  - {{name: b, model: chat-b, version: '1', endpoints: ['{b}']}}\n"
    )


async def router_sums(url: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of the router's timing histograms: in the router (headers received to
    final answer, body paths), its own CPU per message (decision), Envoy's body transfer."""
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(url) as r:
        text = await r.text()
    want = {
        "in_router": 'model_router_request_duration_seconds_{}{{path="body"}}',
        "decision": 'model_router_phase_duration_seconds_{}{{phase="decision"}}',
        "body_transfer": 'model_router_phase_duration_seconds_{}{{phase="body_transfer"}}',
    }
    values = {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
              if ln and not ln.startswith("#")}  # fmt: skip
    return {
        k: (values.get(v.format("sum"), 0.0), values.get(v.format("count"), 0.0))
        for k, v in want.items()
    }


def cpu_s(pid: int) -> float:
    """utime + stime of a process and its children that have exited, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(f) for f in fields[11:15]) / ticks


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p / 100 * len(values)))], 1)


def read_points(points: Path) -> tuple[dict[str, Counter[str]], dict[str, list[float]]]:
    """k6's JSON output: response outcomes by scenario kind, and latencies (ms)."""
    outcomes: dict[str, Counter[str]] = {"big": Counter(), "small": Counter()}
    latency: dict[str, list[float]] = {"big": [], "small": []}
    with points.open() as fh:
        for line in fh:
            doc = json.loads(line)
            if doc.get("type") != "Point":
                continue
            metric, data = doc["metric"], doc["data"]
            if metric == "outcomes":
                tags = data["tags"]
                want = "chat-b" if tags["kind"] == "big" else "chat-a"
                status = tags["status"]
                if status == "200" and tags["served"] != want:
                    status = f"200-wrong-model:{tags['served']}"
                outcomes[tags["kind"]][status] += int(data["value"])
            elif metric in ("small_latency", "big_latency"):
                latency[metric.split("_")[0]].append(float(data["value"]))
    return outcomes, latency


async def run_k6(url: str, workdir: Path, args: argparse.Namespace) -> Path:
    big, small = workdir / "big.json", workdir / "small.json"
    big.write_bytes(big_body(args.size))
    small.write_bytes(json.dumps(SMALL).encode())
    points = workdir / "points.json"
    env = dict(os.environ)
    env.update(
        TARGET_URL=url, BIG_FILE=str(big), SMALL_FILE=str(small), FLOOD_VUS=str(args.flood),
        SMALL_RATE=str(args.small_rate), DURATION=f"{int(args.seconds * 1000)}ms",
        SUMMARY_FILE=str(workdir / "summary.json"), K6_NO_USAGE_REPORT="true",
    )  # fmt: skip
    k6 = Path(sys.executable).parent / "k6"
    proc = await asyncio.create_subprocess_exec(
        str(k6), "run", "--quiet", "--no-usage-report", "--out", f"json={points}", str(K6_SCRIPT),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), args.seconds + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"k6 failed: {err.decode()[-2000:]}")
    return points


async def run(args: argparse.Namespace) -> dict[str, Any]:
    specs = [ModelServerSpec(n, "openai", f"chat-{n}", "1") for n in ("a", "b")]
    servers = await run_servers(specs)
    workdir = Path(tempfile.mkdtemp(prefix="body-flood-"))
    ports = PORTS.take(4)
    text = routes(servers[0].address, servers[1].address, ports, args)
    path = workdir / "routes.yaml"
    path.write_text(text)
    stack = Stack(parse_config(text), path, workdir=workdir)
    profiler: ManagedProcess | None = None
    try:
        await stack.start()
        url = stack.url + "/v1/chat/completions"
        if args.profile:
            assert stack.router is not None
            profiler = ManagedProcess("py-spy", [
                "py-spy", "record", "-o", args.profile, "--pid", str(stack.router.pid),
                "--duration", str(int(args.seconds)), "--rate", "200", "--idle",
                "--threads", "--format", "raw" if args.profile.endswith(".txt") else "flamegraph",
            ], log=workdir / "py-spy.log")  # fmt: skip
            await profiler.start()
        procs = {"router": stack.router, "envoy": stack.envoy}
        cpu0 = {k: cpu_s(p.pid) for k, p in procs.items() if p is not None}
        metrics_url = f"http://127.0.0.1:{ports[1]}/metrics"
        m0 = await router_sums(metrics_url)
        points = await run_k6(url, workdir, args)
        m1 = await router_sums(metrics_url)
        cpu = {k: round(cpu_s(procs[k].pid) - v, 2) for k, v in cpu0.items()}  # type: ignore[union-attr]
        if profiler is not None and profiler.proc is not None:
            await asyncio.wait_for(profiler.proc.wait(), 60)
        outcomes, latency = read_points(points)
        return {
            "mode": args.mode,
            "message_timeout_ms": args.message_timeout_ms,
            "max_concurrent_large_bodies": args.large_limit,
            "seconds": args.seconds,
            "cpu_s": cpu,
            "router_mean_ms": {
                k: round((m1[k][0] - m0[k][0]) / max(1.0, m1[k][1] - m0[k][1]) * 1000, 2)
                for k in m1
            },
            "flood": {
                "clients": args.flood, "bytes": args.size, "statuses": dict(outcomes["big"]),
                "p50_ms": pct(latency["big"], 50), "p99_ms": pct(latency["big"], 99),
            },
            "small": {
                "rate": args.small_rate, "statuses": dict(outcomes["small"]),
                "p50_ms": pct(latency["small"], 50), "p99_ms": pct(latency["small"], 99),
                "max_ms": pct(latency["small"], 100),
            },
        }  # fmt: skip
    finally:
        if profiler is not None:
            await profiler.stop()
        await stack.stop()
        for s in servers:
            await s.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--flood", type=int, default=60)
    ap.add_argument("--size", type=int, default=900_000)
    ap.add_argument("--mode", choices=["closed", "open"], default="closed")
    ap.add_argument("--message-timeout-ms", type=int, default=1000)
    ap.add_argument(
        "--large-limit",
        type=int,
        default=8,
        help="limits.max_concurrent_large_bodies (0: no bound)",
    )
    ap.add_argument("--small-rate", type=int, default=20, help="small requests per second")
    ap.add_argument(
        "--small-native",
        action="store_true",
        help="the small requests' model is routed by Envoy alone (no router hop)",
    )
    ap.add_argument("--profile", default=None)
    args = ap.parse_args()
    if args.seconds > 120:
        sys.exit("--seconds: at most 120 (a bounded flood)")
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
