"""One setup end to end (start, warm up, measure each mode, stop) and one measurement.

A measurement is one k6 run with the CPU of the router, Envoy, nginx and k6 read from
``/proc`` before and after, optionally with py-spy recording the router.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from extproc.control.gateway.keys import entry_for, new_key
from extproc.control.loading import parse_config
from extproc.dev.redis_server import RedisServer, redis_server_binary
from extproc.ops.envoy_config import EnvoyPorts, render_bootstrap
from extproc.ops.procs import PORTS
from extproc.ops.stack import Stack
from loadtest.bench.cpu import (
    CLK_TCK,
    children_cpu,
    cpu_seconds,
    descendants,
    machine_busy,
    thread_cpu,
)
from loadtest.bench.processes import (
    REAPER,
    ROOT,
    DirectEnvoy,
    MinimalStack,
    Nginx,
    run_k6,
    wait_or_kill,
)
from loadtest.bench.scenarios import (
    GATEWAY_TENANT,
    MODES,
    VALIDATION_SETUPS,
    Options,
    Setup,
    direct_bootstrap,
    routes_yaml,
)


@dataclass(slots=True)
class Result:
    setup: str
    mode: str
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    requests: int = 0
    router_cpu_us_per_req: float = 0.0
    envoy_cpu_us_per_req: float = 0.0
    nginx_cpu_us_per_req: float = 0.0
    k6_cpu_us_per_req: float = 0.0
    machine_busy_pct: float = 0.0
    other_busy_pct: float = 0.0
    """Machine CPU used by processes that are not ours (noise from other work)."""
    avg_ms: float = 0.0
    p90_ms: float = 0.0
    max_ms: float = 0.0
    dropped: int = 0
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "errors": self.errors,
            "router_cpu_us_per_req": round(self.router_cpu_us_per_req, 1),
            "envoy_cpu_us_per_req": round(self.envoy_cpu_us_per_req, 1),
            "nginx_cpu_us_per_req": round(self.nginx_cpu_us_per_req, 1),
            "k6_cpu_us_per_req": round(self.k6_cpu_us_per_req, 1),
            "machine_busy_pct": round(self.machine_busy_pct, 1),
            "other_busy_pct": round(self.other_busy_pct, 1),
            "requests": self.requests,
            "dropped_iterations": self.dropped,
            "avg_ms": round(self.avg_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "max_ms": round(self.max_ms, 3),
        }
        if self.added_p50_ms is not None and self.added_p99_ms is not None:
            out["added_p50_ms"] = round(self.added_p50_ms, 3)
            out["added_p99_ms"] = round(self.added_p99_ms, 3)
        out.update(self.extra)
        return out


def _metric(summary: dict[str, Any], name: str, key: str, default: float = 0.0) -> float:
    values = summary.get("metrics", {}).get(name, {}).get("values", {})
    return float(values.get(key, default))


async def py_spy(opts: Options, pid: int, name: str, duration_s: float) -> asyncio.Task[None]:
    """Start ``py-spy record`` on the router tree; the task ends when py-spy does."""
    assert opts.profile_dir is not None
    exe = ROOT / ".venv" / "bin" / "py-spy"
    target = opts.profile_dir / f"{name}.speedscope.json"
    argv = [str(exe), "record", "-p", str(pid), "-d", str(max(1, int(duration_s)))]
    argv += ["-r", "200", "-f", "speedscope", "-o", str(target), "--subprocesses"]
    # --native unwinds C frames (grpc core, upb, uvloop) and needs to pause the process;
    # without it, sample without pausing so the router is barely perturbed.
    argv.append("--native" if opts.profile_native else "--nonblocking")
    log = (opts.profile_dir / f"{name}.py-spy.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
    )
    REAPER.add(proc.pid)

    async def wait() -> None:
        try:
            await wait_or_kill(proc, duration_s + 60)
        finally:
            log.close()

    return asyncio.create_task(wait(), name=f"py-spy-{name}")


async def measure(
    opts: Options,
    setup: Setup,
    mode: str,
    url: str,
    body: Path,
    workdir: Path,
    router_pid: int | None,
    envoy_pid: int,
    nginx: Nginx,
    api_key: str = "",
) -> Result:
    router_pids = descendants(router_pid) if router_pid else []
    nginx_pids = nginx.pids
    profile: asyncio.Task[None] | None = None
    if opts.profile_dir is not None and router_pid and mode == "max":
        # Skip the first second (k6 start-up); stop before the run ends.
        profile = await py_spy(opts, router_pid, setup.name, max(1.0, opts.duration_s - 2))
    r0, e0, n0, k0 = (
        cpu_seconds(router_pids),
        cpu_seconds([envoy_pid]),
        cpu_seconds(nginx_pids),
        children_cpu(),
    )
    th0 = thread_cpu(router_pids)
    b0, t0 = machine_busy()
    w0 = time.monotonic()
    try:
        summary = await run_k6(
            opts, url, body, mode, workdir / f"{setup.name}-{mode}", api_key=api_key
        )
    finally:
        if profile is not None:
            await profile
    b1, t1 = machine_busy()
    wall = time.monotonic() - w0
    router_cpu = cpu_seconds(router_pids) - r0
    envoy_cpu = cpu_seconds([envoy_pid]) - e0
    nginx_cpu = cpu_seconds(nginx_pids) - n0
    k6_cpu = children_cpu() - k0
    reqs = int(_metric(summary, "http_reqs", "count"))
    per = 1e6 / reqs if reqs else 0.0
    th1 = thread_cpu(router_pids)
    threads = {k: round((v - th0.get(k, 0.0)) * per, 1) for k, v in sorted(th1.items())}
    ours = router_cpu + envoy_cpu + nginx_cpu + k6_cpu
    other = (b1 - b0) / CLK_TCK - ours
    cores = os.cpu_count() or 1
    extra: dict[str, Any] = {}
    if router_pids:
        extra["router_thread_cpu_us_per_req"] = {k: v for k, v in threads.items() if v}
    return Result(
        extra=extra,
        setup=setup.name,
        mode=mode,
        rps=_metric(summary, "http_reqs", "rate"),
        p50_ms=_metric(summary, "http_req_duration", "p(50)"),
        p99_ms=_metric(summary, "http_req_duration", "p(99)"),
        avg_ms=_metric(summary, "http_req_duration", "avg"),
        p90_ms=_metric(summary, "http_req_duration", "p(90)"),
        max_ms=_metric(summary, "http_req_duration", "max"),
        errors=int(_metric(summary, "bench_errors", "count")),
        dropped=int(_metric(summary, "dropped_iterations", "count")),
        requests=reqs,
        router_cpu_us_per_req=router_cpu * per,
        envoy_cpu_us_per_req=envoy_cpu * per,
        nginx_cpu_us_per_req=nginx_cpu * per,
        k6_cpu_us_per_req=k6_cpu * per,
        machine_busy_pct=100.0 * (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0,
        other_busy_pct=max(0.0, 100.0 * other / (wall * cores)) if wall > 0 else 0.0,
    )


async def run_setup(
    opts: Options,
    setup: Setup,
    workdir: Path,
    bodies: dict[str, Path],
    nginx: Nginx,
    backends: list[int],
) -> list[Result]:
    sdir = workdir / setup.name
    sdir.mkdir(parents=True, exist_ok=True)
    listen, admin = PORTS.take(2)
    grpc_ports = PORTS.take(opts.workers, consecutive=True)
    config_path = sdir / "routes.yaml"
    validation = any(s.name in opts.setups for s in VALIDATION_SETUPS)
    api_key = new_key() if setup.gateway else ""
    redis: RedisServer | None = None
    if setup.gateway:
        keys = sdir / "keys.yaml"
        keys.write_text(json.dumps({"keys": [entry_for(api_key, name="bench",
                                                       tenant=GATEWAY_TENANT)]}))  # fmt: skip
    if setup.gateway == "redis":
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("no redis-server: run scripts/install-redis")
        redis = RedisServer(binary, sdir / "redis")
        await redis.start()
        REAPER.add(redis.process.pid)
    text = routes_yaml(
        grpc_ports[0],
        opts.workers,
        listen,
        admin,
        backends,
        validation=validation,
        pin_cpu=opts.pin_cpu,
        unix_socket_dir="@model-router-bench" if setup.uds else None,  # the default kind
        gateway=setup.gateway,
        keys_file=str(sdir / "keys.yaml"),
        redis_url=redis.url if redis is not None else "",
    )
    config_path.write_text(text)
    config = parse_config(text, str(config_path))
    url = f"http://127.0.0.1:{listen}{setup.path}"
    body = bodies[setup.body]
    stack: Stack | None = None
    direct: DirectEnvoy | None = None
    results: list[Result] = []
    try:
        if setup.routed:
            kwargs: dict[str, Any] = {
                "workdir": sdir,
                "log_level": "warning",
                "envoy_concurrency": opts.envoy_concurrency,
                "ports": EnvoyPorts.from_config(config),
            }
            if setup.minimal:
                (probe_port,) = PORTS.take(1)
                stack = MinimalStack(
                    config, config_path, backends=backends, probe_port=probe_port, **kwargs
                )
            else:
                stack = Stack(config, config_path, **kwargs)
            await stack.start()
            assert stack.router is not None and stack.envoy is not None
            REAPER.add(stack.router.pid)
            REAPER.add(stack.envoy.pid)
            router_pid: int | None = stack.router.pid
            envoy_pid = stack.envoy.pid
        else:
            rendered = render_bootstrap(config, EnvoyPorts.from_config(config))
            direct = DirectEnvoy(
                sdir, direct_bootstrap(rendered, backends), admin, opts.envoy_concurrency
            )
            await direct.start()
            assert direct.envoy is not None
            router_pid = None
            envoy_pid = direct.envoy.pid
        # Warm-up: connections, Envoy's upstream pools, the router's code paths.
        warm = await run_k6(
            opts, url, body, "warmup", sdir / "warmup", duration_s=10, api_key=api_key
        )
        warm_errors = int(_metric(warm, "bench_errors", "count"))
        if warm_errors:
            log = sdir / "warmup.k6.log"
            raise RuntimeError(
                f"{setup.name}: {warm_errors} warm-up requests were not 200 (see {log}, "
                f"{sdir}/envoy.log, {sdir}/router.log)"
            )
        for mode in MODES:
            ops0 = await redis_commands(redis) if redis is not None else 0
            res = await measure(
                opts, setup, mode, url, body, sdir, router_pid, envoy_pid, nginx, api_key
            )
            if redis is not None and res.requests:
                ops = await redis_commands(redis) - ops0 - 1  # less our own INFO
                res.extra["redis_ops_per_req"] = round(ops / res.requests, 4)
            results.append(res)
            print(
                f"  {setup.name:<14} {mode:<5} {res.rps:8.0f} req/s  p50 {res.p50_ms:6.2f} ms"
                f"  p99 {res.p99_ms:6.2f} ms  errors {res.errors}"
                f"  router {res.router_cpu_us_per_req:6.0f} us/req",
                flush=True,
            )
    finally:
        if stack is not None:
            pids = [p.pid for p in (stack.router, stack.envoy) if p is not None and p.proc]
            try:
                await stack.stop()
            finally:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
                    REAPER.discard(pid)
        if direct is not None:
            await direct.stop()
        if redis is not None:
            await redis.stop()
            REAPER.discard(redis.process.pid)
    return results


async def redis_commands(server: RedisServer) -> int:
    """Commands the Redis server has processed (``INFO stats``), this one included."""
    client = aioredis.Redis.from_url(server.url)
    try:
        stats = await client.info("stats")
    finally:
        await client.aclose()
    return int(stats["total_commands_processed"])
