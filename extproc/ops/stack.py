"""Router + Envoy together: ``model-router up`` and the demo/test/bench harnesses.

:class:`Stack` starts the router (its supervisor when ``workers > 1``), waits for
gRPC readiness, renders Envoy's bootstrap from the shipped template, starts the
Envoy binary, waits for ``/ready``, and stops both cleanly.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
from pathlib import Path

from extproc.control.schema import Config
from extproc.ops.envoy_config import EnvoyPorts, render_bootstrap
from extproc.ops.procs import (
    ManagedProcess,
    envoy_argv,
    router_argv,
    wait_grpc_serving,
    wait_http_ok,
)


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
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.workdir = workdir
        self.log_level = log_level
        self.envoy_log_level = envoy_log_level
        self.envoy_concurrency = envoy_concurrency
        self.ports = ports or EnvoyPorts.from_config(config)
        self.router: ManagedProcess | None = None
        self.envoy: ManagedProcess | None = None
        self.bootstrap = workdir / "envoy.yaml"

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

    async def start_router(self) -> None:
        self.router = ManagedProcess(
            "router",
            router_argv(self.config_path, log_level=self.log_level),
            log=self.workdir / "router.log",
        )
        await self.router.start()
        host = self.config.listener.host
        for port in self.ports.ext_proc_ports:
            await wait_grpc_serving(f"{host}:{port}", proc=self.router)

    async def start_envoy(self, *, render: bool = True) -> None:
        """Start Envoy on the bootstrap rendered for the routing file (``render=False``:
        on the bootstrap file as it is, e.g. edited by a test)."""
        if render:
            self.bootstrap.write_text(render_bootstrap(self.config, self.ports))
        argv = envoy_argv(
            self.bootstrap, log_level=self.envoy_log_level, concurrency=self.envoy_concurrency
        )
        argv += ["--file-flush-interval-msec", "250"]
        self.envoy = ManagedProcess("envoy", argv, log=self.workdir / "envoy.log")
        await self.envoy.start()
        await wait_http_ok(f"{self.admin_url}/ready", proc=self.envoy)

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
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

    async def wait_any_exit(self) -> str:
        procs = [p for p in (self.router, self.envoy) if p is not None and p.proc is not None]
        waits = {asyncio.ensure_future(p.proc.wait()): p.name for p in procs}  # type: ignore[union-attr]
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for fut in pending:
            fut.cancel()
        return waits[next(iter(done))]


async def run_up(config: Config, config_path: Path, log_level: str) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="model-router-up-"))
    stack = Stack(config, config_path, workdir=workdir, log_level=log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stack.start()
    metrics = config.listener.metrics_port
    print(f"envoy     {stack.url}  (send requests here)")
    print(f"admin     {stack.admin_url}")
    for i, port in enumerate(stack.ports.ext_proc_ports):
        m = f"  metrics http://{config.listener.host}:{metrics + i}/metrics" if metrics else ""
        print(f"router    worker {i}: grpc {config.listener.host}:{port}{m}")
    print(f"bootstrap {stack.bootstrap}")
    print(f"logs      {workdir}/router.log, {workdir}/envoy.log")
    print("Ctrl-C stops both.", flush=True)
    exit_wait = asyncio.create_task(stack.wait_any_exit(), name="wait-children")
    stop_wait = asyncio.create_task(stop.wait(), name="wait-signal")
    done, _ = await asyncio.wait({exit_wait, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if exit_wait in done:
        print(f"{exit_wait.result()} exited unexpectedly; stopping", flush=True)
        code = 1
    exit_wait.cancel()
    stop_wait.cancel()
    await stack.stop()
    print("stopped", flush=True)
    return code
