"""Router + Envoy together: ``model-router up`` and the demo/test/bench harnesses.

:class:`Stack` checks that every port it needs is free, starts the router (its
supervisor when ``workers > 1``), waits for gRPC readiness, renders Envoy's bootstrap
from the shipped template, starts the Envoy binary, waits for ``/ready`` (and checks
that the Envoy answering is its own), and stops both cleanly. A start-up failure is a
:class:`StartupError`: one line with the cause, the port or file, and the log's path.

:func:`run_up` keeps both running: a router that dies is started again (at once, then
with a growing delay) while Envoy keeps serving on its last config, its failure mode
covering the gap; an Envoy that dies is started again too. Only SIGINT or SIGTERM
stops both.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from extproc.control.schema import Config
from extproc.ops.envoy_config import EnvoyPorts, render_bootstrap
from extproc.ops.gateway_filters import jwks_path
from extproc.ops.procs import (
    ManagedProcess,
    envoy_argv,
    ports_in_use,
    router_argv,
    wait_grpc_serving,
    wait_http_ok,
)
from extproc.ops.supervisor import Backoff

READY_TIMEOUT_S = 60.0


class StartupError(RuntimeError):
    """The stack could not start; the message says why, where, and which log to read."""


class Stack:
    def __init__(
        self,
        config: Config,
        config_path: Path,
        *,
        workdir: Path,
        log_level: str = "warning",
        envoy_log_level: str = "warning",
        envoy_concurrency: int | None = None,
        ports: EnvoyPorts | None = None,
        router_env: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.router_env = router_env
        """Extra environment for the router (e.g. ``CONSUL_HTTP_ADDR``)."""
        self.config_path = config_path
        self.workdir = workdir
        self.log_level = log_level
        self.envoy_log_level = envoy_log_level
        self.envoy_concurrency = envoy_concurrency
        self.ports = ports or EnvoyPorts.from_config(config)
        self.router: ManagedProcess | None = None
        self.envoy: ManagedProcess | None = None
        self.bootstrap = workdir / "envoy.yaml"
        self.last_good = workdir / "routes.last-good.yaml"
        """The router's last accepted routing file (a restarted router starts on it)."""

    def __repr__(self) -> str:
        return (
            f"Stack(listen={self.ports.listen_host}:{self.ports.listen_port}, "
            f"admin={self.ports.admin_port}, router_ports={list(self.ports.ext_proc_ports)}, "
            f"router={self.router!r}, envoy={self.envoy!r})"
        )

    @property
    def url(self) -> str:
        return f"http://{self.ports.listen_host}:{self.ports.listen_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.ports.admin_host}:{self.ports.admin_port}"

    @property
    def stats_url(self) -> str | None:
        """Envoy's Prometheus endpoint on the stats listener (``envoy.stats_port``)."""
        if not self.ports.stats_port:
            return None
        host = self.ports.listen_host
        if host in ("0.0.0.0", "::"):  # a wildcard listener: reach it on loopback
            host = "127.0.0.1"
        return f"http://{host}:{self.ports.stats_port}/stats/prometheus"

    def preflight(self) -> None:
        """Every port the stack will listen on must be free now: a port another program
        holds would otherwise fail later, or worse, answer our readiness checks."""
        listener, p = self.config.listener, self.ports
        wanted: list[tuple[str, int, str]] = [
            (p.listen_host, p.listen_port, "envoy.listen_port"),
            (p.admin_host, p.admin_port, "envoy.admin_port"),
        ]
        if p.stats_port:
            wanted.append((p.listen_host, p.stats_port, "envoy.stats_port"))
        for i, port in enumerate(p.ext_proc_ports):
            wanted.append((listener.host, port, f"listener.port (worker {i})"))
            if listener.metrics_port:
                m = listener.metrics_port + i
                wanted.append((listener.host, m, f"listener.metrics_port (worker {i})"))
        for host, port, key in wanted:
            if ports_in_use(host, [port]):
                raise StartupError(
                    f"port {port} on {host} ({key} in {self.config_path}) is already in use "
                    "by another program; stop it or choose another port"
                )

    def _router_proc(self) -> ManagedProcess:
        workers = self.config.listener.workers
        argv = router_argv(
            self.config_path,
            workers=workers if workers > 1 else None,
            log_level=self.log_level,
            last_good=self.last_good,
        )
        env = {**os.environ, **self.router_env} if self.router_env else None
        return ManagedProcess("router", argv, env=env, log=self.workdir / "router.log")

    async def start_router(self) -> None:
        self.router = self.router or self._router_proc()
        await self.router.start()
        host = self.config.listener.host
        try:
            for port in self.ports.ext_proc_ports:
                await wait_grpc_serving(
                    f"{host}:{port}", proc=self.router, timeout_s=READY_TIMEOUT_S
                )
        except (RuntimeError, TimeoutError) as exc:
            raise self._failed(self.router, "router", exc) from exc

    async def start_envoy(self, *, render: bool = True) -> None:
        """Start Envoy on the bootstrap rendered for the routing file (``render=False``:
        on the bootstrap file as it is, e.g. edited by a test)."""
        if render:
            jwks = jwks_path(self.config, Path(self.config_path))
            self.bootstrap.write_text(render_bootstrap(self.config, self.ports, jwks))
        argv = envoy_argv(
            self.bootstrap, log_level=self.envoy_log_level, concurrency=self.envoy_concurrency
        )
        argv += ["--file-flush-interval-msec", "250"]
        self.envoy = self.envoy or ManagedProcess("envoy", argv, log=self.workdir / "envoy.log")
        await self.envoy.start()
        try:
            await wait_http_ok(f"{self.admin_url}/ready", READY_TIMEOUT_S, proc=self.envoy)
            await self._check_own_envoy()
        except (RuntimeError, TimeoutError) as exc:
            raise self._failed(self.envoy, "envoy", exc) from exc

    async def _check_own_envoy(self) -> None:
        """The Envoy answering on the admin port runs our bootstrap (not another one)."""
        async with (
            aiohttp.ClientSession(trust_env=False) as s,
            s.get(f"{self.admin_url}/server_info", timeout=aiohttp.ClientTimeout(total=5)) as r,
        ):
            info = await r.json(content_type=None)
        path = (info.get("command_line_options") or {}).get("config_path")
        if path != str(self.bootstrap):
            raise RuntimeError(
                f"another Envoy answers on admin port {self.ports.admin_port} (it runs {path})"
            )

    def _failed(self, proc: ManagedProcess, name: str, exc: Exception) -> StartupError:
        how = "exited before it was ready" if not proc.running else f"not ready: {exc}"
        cause = proc.cause() if not proc.running else ""
        return StartupError(f"{name} {how}{f' ({cause})' if cause else ''}; log: {proc.log}")

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.preflight()
            await self.start_router()
            await self.start_envoy()
        except BaseException:
            await self.stop()
            raise

    async def stop_router(self) -> None:
        if self.router is not None:
            await self.router.stop(self.config.listener.grace_period_s + 5)

    async def stop(self) -> None:
        # Envoy first, so no new request reaches a stopping router.
        if self.envoy is not None:
            await self.envoy.stop(5)
        await self.stop_router()


async def _keep_running(
    proc: ManagedProcess, restart: Callable[[], Awaitable[None]], stopping: asyncio.Event
) -> None:
    """Start ``proc`` again whenever it exits, until ``stopping``; say why each time."""
    backoff = Backoff()
    started = time.monotonic()
    while True:
        assert proc.proc is not None
        await proc.proc.wait()
        if stopping.is_set():
            return
        delay = backoff.after(time.monotonic() - started)
        again = "at once" if delay == 0 else f"in {delay:.1f}s"
        print(f"{proc.name} exited ({proc.cause()}); starting it again {again}", flush=True)
        await asyncio.sleep(delay)
        if stopping.is_set():
            return
        started = time.monotonic()
        try:
            await restart()
        except (StartupError, OSError) as exc:
            print(f"{proc.name} did not come back: {exc}", flush=True)
            continue
        print(f"{proc.name} is back", flush=True)


def stop_on_signals() -> asyncio.Event:
    """An event SIGINT or SIGTERM sets (for commands that run until stopped)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_up(config: Config, config_path: Path, log_level: str) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="model-router-up-"))
    stack = Stack(config, config_path, workdir=workdir, log_level=log_level)
    stop = stop_on_signals()
    try:
        await stack.start()
    except StartupError as exc:
        print(f"model-router up: {exc}", flush=True)
        if not any(p.exists() for p in (workdir / "router.log", workdir / "envoy.log")):
            shutil.rmtree(workdir, ignore_errors=True)
        return 1
    metrics = config.listener.metrics_port
    print(f"envoy     {stack.url}  (send requests here)")
    print(f"admin     {stack.admin_url}")
    if stack.stats_url:
        print(f"stats     {stack.stats_url}  (Prometheus)")
    for i, port in enumerate(stack.ports.ext_proc_ports):
        m = f"  metrics http://{config.listener.host}:{metrics + i}/metrics" if metrics else ""
        print(f"router    worker {i}: grpc {config.listener.host}:{port}{m}")
    print(f"bootstrap {stack.bootstrap}")
    print(f"logs      {workdir}/router.log, {workdir}/envoy.log")
    print("Ctrl-C stops both.", flush=True)
    assert stack.router is not None and stack.envoy is not None
    keepers = [
        asyncio.create_task(_keep_running(stack.router, stack.start_router, stop), name="router"),
        asyncio.create_task(_keep_running(stack.envoy, stack.start_envoy, stop), name="envoy"),
    ]
    await stop.wait()
    for task in keepers:
        task.cancel()
    await asyncio.gather(*keepers, return_exceptions=True)
    await stack.stop()
    print("stopped", flush=True)
    return 0
