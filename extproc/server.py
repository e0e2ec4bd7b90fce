"""The ext_proc gRPC server: a thin pump over :class:`~extproc.flow.RequestFlow`.

:class:`Server` owns start-up and shutdown (gRPC, health, metrics HTTP, reloads).
Shutdown is graceful: health goes NOT_SERVING first, then ``server.stop(grace)``
lets open streams finish.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from aiohttp import web
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from extproc.config import Config, load_config
from extproc.errors import ConfigError, InternalError
from extproc.flow import Phase, RequestFlow, RouterState
from extproc.metrics import Metrics, serve_metrics
from extproc.policies.scheduler import Scheduler
from extproc.registry import Snapshot, make_registry
from extproc.registry.consul import ConsulRegistry

log = logging.getLogger("extproc.server")

EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
HEALTH_SERVICES = ("", "liveness", "readiness", EXT_PROC_SERVICE)
_GRPC_OVERHEAD = 256 * 1024  # headers, metadata and framing on top of the body


def _clock() -> float:
    return time.perf_counter()


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class ExternalProcessor(ep_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """One ext_proc stream = one HTTP request; all logic is in the flow."""

    def __init__(self, server: Server) -> None:
        self._server = server

    async def Process(
        self,
        request_iterator: AsyncIterator[ep.ProcessingRequest],
        context: grpc.aio.ServicerContext[ep.ProcessingRequest, ep.ProcessingResponse],
    ) -> None:
        # read()/write() rather than an async generator: less machinery per message.
        server = self._server
        metrics = server.metrics
        flow = RequestFlow(server.state)
        read, write, eof = context.read, context.write, grpc.aio.EOF
        metrics.inflight.inc()
        opened = _clock()
        first: float | None = None
        answered_headers: float | None = None
        transfer: float | None = None
        busy = 0.0
        try:
            while (msg := await read()) is not eof:
                t0 = _clock()
                if first is None:
                    first = t0
                elif answered_headers is not None and transfer is None:
                    transfer = t0 - answered_headers
                try:
                    resp = flow.receive(msg)
                except Exception:  # the per-request boundary: log, count, answer
                    head = flow.head
                    log.exception(
                        "internal error while processing a request",
                        extra={"request_id": head.request_id if head else ""},
                    )
                    metrics.internal_errors.inc()
                    resp = flow.fail(InternalError("internal router error; see router logs"))
                t1 = _clock()
                busy += t1 - t0
                done = flow.phase is Phase.DONE
                if done:  # record first: Envoy may cancel the stream once it has the answer
                    metrics.observe(
                        flow.outcome, decision_s=busy, in_router_s=t1 - first,
                        body_transfer_s=transfer,
                    )  # fmt: skip
                    server.log_outcome(flow)
                if resp is not None:
                    await write(resp)
                    if done:
                        # End the RPC now: Envoy takes the server's close as "processing
                        # complete" (response phases are off in the shipped config), which
                        # saves a read and its wake-ups per request.
                        return
                    if answered_headers is None:
                        answered_headers = _clock()
        finally:
            metrics.inflight.dec()
            metrics.observe_stream(_clock() - opened)


class Server:
    """Owns one worker: gRPC ext_proc + health, the metrics endpoint and reloads."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: str | Path | None = None,
        worker: int = 0,
        registry: CollectorRegistry | None = None,
        watch_interval_s: float = 1.0,
    ) -> None:
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self.worker = worker
        self.port = config.listener.port + worker
        mport = config.listener.metrics_port
        self.metrics_port = mport + worker if mport else 0
        self.metrics = Metrics(registry or CollectorRegistry(), worker=worker)
        self.watch_interval_s = watch_interval_s
        self._state: RouterState | None = None
        self._grpc: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._http: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._should_exit = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._serving = False
        self._stamp: tuple[int, int] | None = None
        self.bound_port = 0
        self.bound_metrics_port = 0

    def __repr__(self) -> str:
        snap = self._state.registry.snapshot if self._state else None
        return (
            f"Server(worker={self.worker}, grpc={self.config.listener.host}:{self.bound_port}, "
            f"metrics={self.bound_metrics_port}, snapshot={snap!r})"
        )

    # -- state -------------------------------------------------------------------------

    @property
    def state(self) -> RouterState:
        if self._state is None:
            raise RuntimeError("Server.startup() has not run")
        return self._state

    def _new_state(
        self, config: Config, generation: int = 0, previous: RouterState | None = None
    ) -> tuple[RouterState, bool]:
        """A state for ``config``; True when its registry is new and must be started.

        A Consul registry whose settings did not change is kept across reloads (its
        watches keep running); it only learns the new routing rules.
        """
        source = str(self.config_path or "<config>")
        if (
            previous is not None
            and isinstance(previous.registry, ConsulRegistry)
            and config.registry.type == "consul"
            and previous.config.registry == config.registry
        ):
            kept = previous.registry
            return RouterState(config=config, registry=kept, scheduler=Scheduler(config)), False
        registry = make_registry(config, source, generation=generation)
        registry.add_listener(self._on_snapshot)
        return RouterState(config=config, registry=registry, scheduler=Scheduler(config)), True

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        """Called by the live registry on every change: metrics, then readiness."""
        current = self._state.registry if self._state is not None else None
        if current is not None and not (current.ready and current.snapshot is snapshot):
            return  # from a registry not (yet) in use: a reload publishes after its swap
        self._publish(snapshot)
        if self._health is not None and not self._serving:
            self._spawn(self._set_health(True), f"health-serving-{self.worker}")

    async def _set_health(self, ready: bool) -> None:
        assert self._health is not None
        self._serving = ready
        for svc in HEALTH_SERVICES:
            serving = svc == "liveness" or ready
            await self._health.set(
                svc,
                health_pb2.HealthCheckResponse.SERVING
                if serving
                else health_pb2.HealthCheckResponse.NOT_SERVING,
            )

    def _staleness(self) -> float:
        return self._state.registry.staleness_s if self._state else 0.0

    def _publish(self, snapshot: Snapshot) -> None:
        g = self.metrics.endpoints
        g.clear()
        for model in snapshot.models.values():
            for dep in model.deployments:
                counts = {"routable" if dep.routable else "disabled": len(dep.endpoints)}
                for _, why in dep.excluded:  # e.g. critical, warning, maintenance (Consul)
                    counts[why] = counts.get(why, 0) + 1
                for state, n in counts.items():
                    g.labels(model.name, dep.version, dep.name, state).set(n)
        self.metrics.config_generation.set(snapshot.generation)
        self.metrics.last_reload.set(time.time())

    async def reload(self) -> bool:
        """Load the routing file again; keep the current state if it does not validate."""
        if self.config_path is None:
            return False
        async with self._reload_lock:
            old = self._state
            generation = old.registry.snapshot.generation + 1 if old and old.registry.ready else 0
            try:
                config = await asyncio.to_thread(load_config, self.config_path)
                state, fresh = self._new_state(config, generation, old)
                if fresh:
                    await state.registry.start()
                else:
                    await state.registry.reconfigure(config)
            except ConfigError as exc:
                self.metrics.reloads.labels("error").inc()
                log.error(
                    "reload rejected, keeping the previous routing file: %s",
                    "; ".join(exc.problems),
                    extra={"source": exc.source},
                )
                return False
            self.config = config
            self._state = state  # the atomic swap: open streams keep the old state
            if state.registry.ready:
                self._publish(state.registry.snapshot)
            self.metrics.reloads.labels("success").inc()
            log.info("routing file reloaded", extra={"generation": generation})
            if old is not None and old.registry is not state.registry:
                await old.registry.stop()
            return True

    async def _watch_file(self) -> None:
        """Reload when the file changes and then holds still (editors write in steps)."""
        assert self.config_path is not None
        settle = min(0.1, self.watch_interval_s)
        while True:
            await asyncio.sleep(self.watch_interval_s)
            stamp = _stamp(self.config_path)
            if stamp is None or stamp == self._stamp:
                continue
            while True:  # wait until two looks in a row agree
                await asyncio.sleep(settle)
                again = _stamp(self.config_path)
                if again == stamp:
                    break
                stamp = again
            self._stamp = stamp
            await self.reload()

    def _spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lifecycle ---------------------------------------------------------------------

    async def startup(self) -> None:
        cfg = self.config
        self._state, _ = self._new_state(cfg)
        limit = cfg.limits.max_body_bytes + _GRPC_OVERHEAD
        self._grpc = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
        )
        ep_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(self), self._grpc)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        host = cfg.listener.host
        self.bound_port = self._grpc.add_insecure_port(f"{host}:{self.port}")
        if self.bound_port == 0:
            raise OSError(f"cannot listen on {host}:{self.port}")
        await self._grpc.start()
        if cfg.listener.metrics_port:
            await self._start_metrics(host)
        await self._set_health(False)
        # gRPC is up (NOT_SERVING) before the registry syncs, so health checkers see why.
        await self._state.registry.start()
        if self._state.registry.ready:
            self._publish(self._state.registry.snapshot)
            await self._set_health(True)
        self.metrics.reloads.labels("success").inc()
        self.metrics.staleness.set_function(self._staleness)
        if self.config_path is not None:
            self._stamp = _stamp(self.config_path)
            self._spawn(self._watch_file(), f"watch-config-{self.worker}")
        log.info(
            "ext_proc worker serving",
            extra={"grpc": f"{host}:{self.bound_port}", "metrics": self.bound_metrics_port},
        )

    async def _start_metrics(self, host: str) -> None:
        self._http, self.bound_metrics_port = await serve_metrics(
            self.metrics.registry, host, self.metrics_port, worker=self.worker
        )

    async def shutdown(self) -> None:
        """NOT_SERVING first, so Envoy and load balancers stop sending; then drain."""
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self.config.listener.drain_delay_s:
            await asyncio.sleep(self.config.listener.drain_delay_s)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._grpc is not None:
            await self._grpc.stop(self.config.listener.grace_period_s)
        if self._http is not None:
            await self._http.cleanup()
        if self._state is not None:
            await self._state.registry.stop()
        log.info("ext_proc worker stopped", extra={"worker": self.worker})

    def request_exit(self) -> None:
        self._should_exit.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_exit)
        loop.add_signal_handler(
            signal.SIGHUP, lambda: self._spawn(self._reload_quietly(), "sighup-reload")
        )

    async def _reload_quietly(self) -> None:
        await self.reload()

    async def serve(self) -> None:
        self.install_signal_handlers()
        await self.startup()
        try:
            await self._should_exit.wait()
        finally:
            await self.shutdown()

    # -- logging -----------------------------------------------------------------------

    def log_outcome(self, flow: RequestFlow) -> None:
        out = flow.outcome
        head = flow.head
        rid = head.request_id if head else ""
        if out.error is not None:
            log.info(
                "request rejected",
                extra={
                    "request_id": rid,
                    "status": out.error.status,
                    "error_type": out.error.type,
                    "reason": out.error.message,
                    "path": head.path_only if head else "",
                },
            )
        elif log.isEnabledFor(logging.DEBUG) and out.decision is not None:
            d = out.decision
            log.debug(
                "request routed",
                extra={
                    "request_id": rid,
                    "model": d.model,
                    "version": d.version,
                    "deployment": d.deployment,
                    "endpoint": d.endpoints[0],
                    "reason": d.reason,
                },
            )
