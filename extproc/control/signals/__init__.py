"""Live signals for load-aware scheduling, gathered off the request path.

:class:`SignalCollector` owns, for one worker: the metrics scraper (model servers'
queue, KV cache, LoRA adapters), Envoy's access-log receiver (in-flight release,
latency averages, outcomes) and passive ejection, and the housekeeping that expires
in-flight picks whose log entry never came. Each writes immutable snapshots onto the
worker's :class:`~extproc.core.signals.SignalBoard`; the hot path only reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from extproc.control.compile import CompiledRouting
from extproc.control.schema import SignalsConfig
from extproc.control.signals.access_log import AccessLogReceiver
from extproc.control.signals.ejection import EjectionTracker
from extproc.control.signals.scraper import MetricsScraper
from extproc.control.signals.targets import scrape_targets
from extproc.core.gateway.quota import QuotaBook
from extproc.core.signals import SignalBoard
from extproc.core.snapshot import Snapshot

log = logging.getLogger("extproc.control.signals")


class SignalCollector:
    def __init__(
        self, board: SignalBoard, config: SignalsConfig, quotas: QuotaBook | None = None
    ) -> None:
        self.board = board
        self.quotas = quotas
        self.config = config
        self.scraper = MetricsScraper(board, config)
        self.ejection = EjectionTracker(board, config.ejection)
        self.access_log = AccessLogReceiver(board, self.ejection, alpha=config.latency_alpha)
        self.access_log.quotas = quotas
        self._tasks: list[asyncio.Task[None]] = []
        board.inflight.timeout_s = config.inflight_timeout_s

    def __repr__(self) -> str:
        return (
            f"SignalCollector({self.scraper!r}, {self.access_log!r}, {self.ejection!r}, "
            f"{self.board!r})"
        )

    def update(self, compiled: CompiledRouting, snapshot: Snapshot) -> None:
        """A new routing file or registry snapshot: what to scrape, what belongs where."""
        config = compiled.config.signals
        if config != self.config:
            self.config = self.scraper.config = config
            self.ejection.config = config.ejection
            self.access_log.alpha = config.latency_alpha
            self.board.inflight.timeout_s = config.inflight_timeout_s
        self.scraper.set_targets(scrape_targets(compiled, snapshot))
        self.ejection.set_snapshot(snapshot)
        self.access_log.forget_endpoints_not_in(self.ejection.deployments)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            expired = self.board.inflight.expire()
            if expired:
                log.warning(
                    "%d in-flight pick(s) released by timeout (no access-log entry)", expired
                )
            self.ejection.prune()
            if self.quotas is not None and self.quotas.expire():
                log.warning("tenant quota slot(s) released by timeout (no access-log entry)")

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.scraper.run(), name="signals-scrape"),
            asyncio.create_task(self._housekeeping(), name="signals-housekeeping"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []


__all__ = ["SignalCollector"]
