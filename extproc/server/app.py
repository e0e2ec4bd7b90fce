"""One router worker: :class:`Server` owns start-up and shutdown.

It composes the gRPC pump (:mod:`extproc.server.pump`), health
(:mod:`extproc.server.health`), the metrics endpoint (:mod:`extproc.server.metrics`)
and the reloader (:mod:`extproc.control.reload`), which hands it a new state on every
reload and registry change. Shutdown is graceful: health goes NOT_SERVING first, then
``server.stop(grace)`` lets open streams finish.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from grpc_health.v1 import health_pb2_grpc
from prometheus_client import CollectorRegistry

from extproc.control.compile import CompiledRouting
from extproc.control.explain import explain_state
from extproc.control.gateway.store import RedisQuotaStore
from extproc.control.last_good import save_last_good
from extproc.control.reload import Reloader
from extproc.control.schema import FailureMode
from extproc.control.signals import SignalCollector
from extproc.control.xds.ads import AdsServicer
from extproc.control.xds.cache import ResourceCache
from extproc.control.xds.publisher import XdsPublisher
from extproc.core.flow import RouterState
from extproc.core.gateway.quota import QuotaBook
from extproc.core.signals import SignalBoard
from extproc.server.authz import NativeAuthorizer
from extproc.server.health import HealthReporter
from extproc.server.metrics import Metrics, serve_metrics
from extproc.server.pump import CurrentState, ExternalProcessor, LargeBodyGate
from extproc.server.signal_metrics import SignalMetrics

log = logging.getLogger("extproc.server")

EXIT_PORT_IN_USE = 3
"""A worker's exit code when it cannot listen (its supervisor gives up, not restarts)."""


class ListenError(OSError):
    """A port or socket this worker must listen on stays taken (bounded retries)."""


def _clear_socket(path: Path) -> None:
    """Make room for a Unix socket: its folder exists, a previous run's file is gone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)


class Server:
    """One worker: gRPC ext_proc + health, the metrics endpoint and reloads."""

    def __init__(
        self,
        compiled: CompiledRouting,
        *,
        config_path: str | Path | None = None,
        worker: int = 0,
        registry: CollectorRegistry | None = None,
        watch_interval_s: float = 1.0,
        last_good: Path | None = None,
        bind_retry_s: float = 10.0,
    ) -> None:
        listener = compiled.config.listener
        self.last_good = last_good
        """Where every accepted routing file is kept (a restarted worker starts on it)."""
        self.bind_retry_s = bind_retry_s
        self.worker = worker
        self.host = listener.host
        self.port = listener.port + worker
        self.metrics_port = listener.metrics_port + worker if listener.metrics_port else 0
        self.metrics = Metrics(registry or CollectorRegistry())
        self.health = HealthReporter()
        self.signals = SignalBoard(worker_id=f"{self.host}:{self.port}")
        quotas_cfg = compiled.config.quotas
        self.quotas = QuotaBook(
            shared=quotas_cfg.store == "redis",
            fail_open=quotas_cfg.on_store_error == "open",
            lease_fraction=quotas_cfg.lease_fraction,
        )
        """Tenant quotas: this worker's buckets and leases (they survive reloads)."""
        self.quota_store: RedisQuotaStore | None = None
        if quotas_cfg.store == "redis" and compiled.gateway is not None:
            self.quota_store = RedisQuotaStore(
                self.quotas, quotas_cfg.redis, worker=self.signals.worker_id
            )
        self.collector = SignalCollector(self.signals, compiled.config.signals, self.quotas)
        self.metrics.registry.register(SignalMetrics(self.collector))
        self.xds = ResourceCache()
        """What this worker serves Envoy over ADS (rebuilt on every state)."""
        self.publisher = XdsPublisher(
            self.xds,
            ack_timeout_s=compiled.config.envoy.xds_ack_timeout_s,
            on_unacked=self.metrics.xds_ack_timeouts.inc,  # linger expiries' publishes too
        )
        self._pending: tuple[RouterState, CompiledRouting] | None = None
        self._applying: asyncio.Task[None] | None = None
        self.reloader = Reloader(
            compiled,
            path=Path(config_path) if config_path else None,
            on_state=self._on_state,
            on_reload=lambda result: self.metrics.reloads.labels(result).inc(),
            on_accepted=self._keep_last_good,
            watch_interval_s=watch_interval_s,
            signals=self.signals,
            quotas=self.quotas,
        )
        self._current: CurrentState | None = None
        self._grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._should_exit = asyncio.Event()
        self.bound_port = 0
        self.bound_metrics_port = 0

    def __repr__(self) -> str:
        state = self._current.state if self._current else None
        return (
            f"Server(worker={self.worker}, grpc={self.host}:{self.bound_port}, "
            f"metrics={self.bound_metrics_port}, {self.health!r}, state={state!r})"
        )

    def _keep_last_good(self, compiled: CompiledRouting) -> None:
        if self.last_good is None:
            return
        try:
            save_last_good(self.last_good, compiled)
        except OSError as exc:
            log.error("cannot keep the last good routing file at %s: %s", self.last_good, exc)

    async def _retry_bind(self, what: str, bind: Callable[[], Awaitable[int]]) -> int:
        """``bind()`` until it works, for at most ``bind_retry_s`` (a previous worker may
        still hold the port for a moment); then :class:`ListenError`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.bind_retry_s
        warned = False
        while True:
            try:
                port = await bind()
            except (OSError, RuntimeError):  # grpc raises RuntimeError("Failed to bind")
                port = 0
            if port:
                return port
            if loop.time() >= deadline:
                raise ListenError(
                    f"cannot listen on {what}: address in use (another model-router or "
                    f"another program holds it; tried for {self.bind_retry_s:g}s)"
                )
            if not warned:
                log.warning("%s is in use; retrying for %gs", what, self.bind_retry_s)
                warned = True
            await asyncio.sleep(0.5)

    @property
    def state(self) -> RouterState:
        if self._current is None:
            raise RuntimeError("Server.startup() has not run")
        return self._current.state

    @property
    def compiled(self) -> CompiledRouting:
        return self.reloader.compiled

    def _on_state(self, state: RouterState, compiled: CompiledRouting) -> None:
        """A new state from the reloader. Envoy gets its clusters, endpoints and routes
        first; the router swaps the state in once Envoy has them (see XdsPublisher).
        States apply in order; when several arrive meanwhile, only the latest does."""
        self._pending = (state, compiled)
        if self._current is not None and (self._applying is None or self._applying.done()):
            self._applying = asyncio.create_task(self._apply(), name=f"apply-{self.worker}")

    async def _apply(self) -> None:
        while self._pending is not None:
            state, compiled = self._pending
            self._pending = None
            if state.snapshot is not None:
                self.collector.update(compiled, state.snapshot)
                try:
                    await self.publisher.publish(compiled, state.snapshot)
                except Exception:  # a config push must never stop routing
                    log.exception("cannot publish xDS resources; Envoy keeps the previous ones")
                    self.metrics.internal_errors.inc()
            assert self._current is not None
            self._current.state = state  # the atomic swap: open streams keep theirs
            if state.snapshot is not None:
                self.metrics.publish_snapshot(state.snapshot)
                if not self.health.ready:
                    await self.health.set_ready(True)

    async def settle(self) -> None:
        """Wait until every state handed over so far is applied (tests, reload)."""
        while self._applying is not None and not self._applying.done():
            await asyncio.shield(self._applying)

    def explain(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``POST /explain``: the decision this worker would take now, with its live
        signals (``model-router explain --router``); nothing live changes."""
        body = payload.get("body")
        raw = base64.b64decode(body) if isinstance(body, str) else None
        headers = [(str(k), str(v)) for k, v in payload.get("headers") or []]
        return explain_state(
            self.compiled,
            self.state,
            self.reloader.registry.describe(),
            str(payload.get("method", "POST")),
            str(payload.get("path", "/")),
            headers,
            raw,
        )

    def _watch_quotas(self) -> None:
        m, book, store = self.metrics, self.quotas, self.quota_store
        m.quota_store_up.set_function(lambda: 1.0 if book.store_ok else 0.0)
        m.quota_overdrafts.set_function(lambda: float(book.overdrafts))
        if store is not None:
            m.quota_store_staleness.set_function(lambda: store.staleness_s)
            m.quota_store_ops.set_function(lambda: float(store.ops))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> bool:
        ok = await self.reloader.reload()
        await self.settle()
        return ok

    # -- lifecycle ---------------------------------------------------------------------

    async def startup(self) -> None:
        limit = self.compiled.config.limits.grpc_max_message_bytes
        self._grpc = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self._grpc)
        ads = AdsServicer(self.xds, observer=self.metrics, name=f"model-router/{self.worker}")
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, self._grpc)
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(self.collector.access_log, self._grpc)
        grpc_server = self._grpc
        address = f"{self.host}:{self.port}"

        async def bind_grpc() -> int:
            return int(grpc_server.add_insecure_port(address))

        self.bound_port = await self._retry_bind(f"{address} (gRPC, listener.port)", bind_grpc)
        sock = self.compiled.config.listener.unix_socket(self.worker)
        if sock is not None:
            if sock.startswith("@"):  # Linux's abstract namespace: no file
                target = f"unix-abstract:{sock[1:]}"
            else:
                _clear_socket(Path(sock))
                target = f"unix:{sock}"
            try:
                bound = self._grpc.add_insecure_port(target)
            except RuntimeError as exc:  # grpcio raises when nothing could bind
                raise ListenError(
                    f"cannot listen on {target} (listener.unix_socket_dir): in use by "
                    "another process, or not allowed"
                ) from exc
            if bound == 0:
                raise ListenError(f"cannot listen on {target} (listener.unix_socket_dir)")
        if self.metrics_port:
            registry, host, port = self.metrics.registry, self.host, self.metrics_port

            async def bind_metrics() -> int:
                self._http, bound = await serve_metrics(
                    registry, host, port, worker=self.worker, explain=self.explain
                )
                return bound

            self.bound_metrics_port = await self._retry_bind(
                f"{host}:{port} (metrics, listener.metrics_port)", bind_metrics
            )
        # The first state exists before the registry syncs (it answers 503 until then).
        self._current = CurrentState(self.reloader.prepare())
        self.metrics.staleness.set_function(lambda: self.reloader.registry.staleness_s)
        config = self.compiled.config
        gate = LargeBodyGate(
            config.limits.large_body_bytes,
            config.limits.max_concurrent_large_bodies,
            wait_s=config.envoy.message_timeout_ms / 2000,
            fail_open=config.failure_mode is FailureMode.OPEN,
        )
        ep_grpc.add_ExternalProcessorServicer_to_server(
            ExternalProcessor(self._current, self.metrics, gate), self._grpc
        )
        authorizer = NativeAuthorizer(self._current, self.metrics, self.signals.worker_id)
        authz_grpc.add_AuthorizationServicer_to_server(authorizer, self._grpc)
        self._watch_quotas()
        await self._grpc.start()
        await self.health.set_ready(False)
        # gRPC is up (NOT_SERVING) before the registry syncs, so health checkers see why.
        await self.reloader.start()
        self.collector.start()
        if self.quota_store is not None:
            self.quota_store.start()
        if self._pending is not None and self._applying is None:
            self._applying = asyncio.create_task(self._apply(), name=f"apply-{self.worker}")
        await self.settle()
        self.metrics.reloads.labels("success").inc()
        self._keep_last_good(self.compiled)
        log.info(
            "ext_proc worker serving",
            extra={"grpc": f"{self.host}:{self.bound_port}", "metrics": self.bound_metrics_port},
        )

    async def shutdown(self) -> None:
        """NOT_SERVING first, so Envoy and load balancers stop sending; then drain."""
        listener = self.compiled.config.listener
        await self.health.shutdown()
        if listener.drain_delay_s:
            await asyncio.sleep(listener.drain_delay_s)
        if self._applying is not None:
            self._applying.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._grpc is not None:
            await self._grpc.stop(listener.grace_period_s)
        if self._http is not None:
            await self._http.cleanup()
        await self.reloader.stop()
        await self.publisher.stop()
        await self.collector.stop()
        if self.quota_store is not None:
            await self.quota_store.stop()
        log.info("ext_proc worker stopped", extra={"worker": self.worker})

    def request_exit(self) -> None:
        self._should_exit.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_exit)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._reload(), "sighup"))

    async def _reload(self) -> None:
        await self.reload()

    async def serve(self) -> None:
        self.install_signal_handlers()
        await self.startup()
        try:
            await self._should_exit.wait()
        finally:
            await self.shutdown()
