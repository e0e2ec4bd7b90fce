"""The processes a bench run starts: nginx, direct Envoy, the minimal-probe stack, k6.

Everything we start is in its own process group and recorded in :data:`REAPER`, which
kills what is left at exit whatever happened (Ctrl-C, exceptions, a hung child).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from dataclasses import replace
from pathlib import Path
from string import Template
from typing import Any

from extproc.ops.procs import (
    ManagedProcess,
    envoy_argv,
    router_argv,
    wait_grpc_serving,
    wait_http_ok,
)
from extproc.ops.stack import Stack
from loadtest.bench.cpu import descendants
from loadtest.bench.scenarios import Options

LOADTEST = Path(__file__).resolve().parents[1]
ROOT = LOADTEST.parent
K6_SCRIPT = LOADTEST / "k6" / "bench.js"
MINIMAL_SCRIPT = LOADTEST / "minimal_extproc.py"
NGINX_TEMPLATE = LOADTEST / "nginx.conf.tmpl"
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"


class Reaper:
    """Process groups to SIGKILL at exit if they are still alive."""

    def __init__(self) -> None:
        self.pgids: set[int] = set()

    def add(self, pgid: int) -> None:
        self.pgids.add(pgid)

    def discard(self, pgid: int) -> None:
        self.pgids.discard(pgid)

    def kill_all(self) -> None:
        for pgid in sorted(self.pgids):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        self.pgids.clear()


REAPER = Reaper()


async def start_managed(proc: ManagedProcess) -> None:
    await proc.start()
    REAPER.add(proc.pid)


async def stop_managed(proc: ManagedProcess | None, grace_s: float) -> None:
    if proc is None or proc.proc is None:
        return
    try:
        await proc.stop(grace_s)
    finally:
        # Whatever is left of its process group (router workers) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        REAPER.discard(proc.pid)


class Nginx:
    def __init__(self, workdir: Path, ports: list[int]) -> None:
        self.workdir = workdir
        self.ports = ports
        self.conf = workdir / "nginx.conf"
        self.proc: ManagedProcess | None = None

    async def start(self) -> None:
        listens = "".join(f"        listen 127.0.0.1:{p};\n" for p in self.ports)
        text = Template(NGINX_TEMPLATE.read_text()).substitute(
            PREFIX=str(self.workdir), LISTENS=listens
        )
        self.conf.write_text(text)
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        argv = [binary, "-p", str(self.workdir), "-c", str(self.conf), "-e", "stderr"]
        self.proc = ManagedProcess("nginx", argv, log=self.workdir / "nginx.log")
        await start_managed(self.proc)
        for port in self.ports:
            await wait_http_ok(f"http://127.0.0.1:{port}/", timeout_s=15, proc=self.proc)

    @property
    def pids(self) -> list[int]:
        return descendants(self.proc.pid) if self.proc and self.proc.running else []

    async def stop(self) -> None:
        await stop_managed(self.proc, 5)


class DirectEnvoy:
    """Envoy from :func:`direct_bootstrap`, with the same flags as :class:`Stack`."""

    def __init__(self, workdir: Path, bootstrap: str, admin_port: int, concurrency: int) -> None:
        self.workdir = workdir
        self.bootstrap = workdir / "envoy-direct.yaml"
        self.bootstrap.write_text(bootstrap)
        self.admin_port = admin_port
        self.concurrency = concurrency
        self.envoy: ManagedProcess | None = None

    async def start(self) -> None:
        argv = envoy_argv(self.bootstrap, log_level="warning", concurrency=self.concurrency)
        argv += ["--file-flush-interval-msec", "250"]
        self.envoy = ManagedProcess("envoy", argv, log=self.workdir / "envoy.log")
        await start_managed(self.envoy)
        await wait_http_ok(f"http://127.0.0.1:{self.admin_port}/ready", proc=self.envoy)

    async def stop(self) -> None:
        await stop_managed(self.envoy, 5)


class MinimalStack(Stack):
    """:class:`Stack` with ``loadtest/minimal_extproc.py`` answering ext_proc.

    The real router still runs, serving Envoy its clusters and routes over xDS (it is
    idle while the load runs: its CPU is not counted); Envoy's ext_proc cluster points
    at the probe. Same routing file, same rendered bootstrap otherwise, same readiness
    wait (gRPC health, the service name Envoy's health check uses).
    """

    def __init__(self, *args: Any, backends: list[int], probe_port: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.endpoints = ",".join(f"127.0.0.1:{p}" for p in backends)
        self.probe_port = probe_port
        self.xds_router: ManagedProcess | None = None
        router_ports = self.ports.ext_proc_ports
        self.ports = replace(
            self.ports, ext_proc_ports=(probe_port,), xds_ports=router_ports, unix_sockets=False
        )

    async def start_router(self) -> None:
        self.xds_router = ManagedProcess(
            "xds-router", router_argv(self.config_path, log_level=self.log_level),
            log=self.workdir / "xds-router.log",
        )  # fmt: skip
        await self.xds_router.start()
        host = self.config.listener.host
        for port in self.ports.xds_ports or ():
            await wait_grpc_serving(f"{host}:{port}", proc=self.xds_router)
        argv = [sys.executable, str(MINIMAL_SCRIPT), "--port", str(self.probe_port)]
        argv += ["--endpoints", self.endpoints]
        self.router = ManagedProcess("router", argv, log=self.workdir / "router.log")
        await self.router.start()
        await wait_grpc_serving(f"{host}:{self.probe_port}", EXT_PROC_SERVICE, proc=self.router)

    async def stop_router(self) -> None:
        await super().stop_router()
        await stop_managed(self.xds_router, self.config.listener.grace_period_s + 5)


def _fmt_duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


async def run_k6(
    opts: Options,
    url: str,
    body: Path,
    mode: str,
    out: Path,
    *,
    duration_s: float | None = None,
    api_key: str = "",
) -> dict[str, Any]:
    """One k6 run (``api_key``: sent as ``x-api-key``); returns the handleSummary JSON."""
    summary = out.with_suffix(".summary.json")
    summary.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update(
        TARGET_URL=url,
        BODY_FILE=str(body),
        MODE=mode,
        DURATION=_fmt_duration(duration_s or opts.duration_s),
        RATE=str(opts.rate),
        VUS=str(opts.vus),
        WARMUP_ITERS=str(opts.warmup_iters),
        SUMMARY_FILE=str(summary),
        K6_NO_USAGE_REPORT="true",
        K6_NO_COLOR="true",
        API_KEY=api_key,
    )
    argv = [str(ROOT / ".venv" / "bin" / "k6"), "run", "--quiet", "--no-usage-report"]
    argv += ["--no-thresholds", str(K6_SCRIPT)]
    with out.with_suffix(".k6.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=str(out.parent),
        )
        REAPER.add(proc.pid)
        await wait_or_kill(proc, (duration_s or opts.duration_s) + 45)
    if proc.returncode != 0 or not summary.exists():
        tail = out.with_suffix(".k6.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"k6 failed (exit {proc.returncode}):\n{tail}")
    data: dict[str, Any] = json.loads(summary.read_text())
    return data


async def wait_or_kill(proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    """Wait for ``proc``; past ``timeout_s`` (or on error) kill its process group. Reaped."""
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        REAPER.discard(proc.pid)
