"""Scraping model servers' load, off the request path, into the board's LoadSnapshot.

Every ``scrape_interval_ms`` each target's ``/metrics`` is fetched over a keep-alive
session with bounded concurrency, only the wanted families are parsed, and one new
immutable :class:`~extproc.core.signals.LoadSnapshot` replaces the board's. A target
that fails keeps its last load, which turns stale (saturated) after ``stale_after_ms``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import aiohttp

from extproc.control.schema import SignalsConfig
from extproc.control.signals.prometheus_text import labels, scan, total
from extproc.control.signals.targets import Families, ScrapeTarget
from extproc.core.signals import EndpointLoad, LoadSnapshot, SignalBoard

log = logging.getLogger("extproc.control.signals")


def parse_load(text: str, families: Families, at: float, inflight: int = 0) -> EndpointLoad:
    found = scan(text, families.all)

    def first(names: tuple[str, ...]) -> float | None:
        for name in names:
            value = total(found.get(name))
            if value is not None:
                return value
        return None

    kv = first(families.kv_usage)
    if kv is not None and families.kv_percent:
        kv /= 100.0
    adapters: set[str] = set()
    if families.lora:
        for line in found.get(families.lora, ()):
            got = labels(line)
            for key in ("running_lora_adapters", "waiting_lora_adapters"):
                adapters.update(a for a in got.get(key, "").split(",") if a)
    return EndpointLoad(
        waiting=first(families.waiting),
        running=first(families.running),
        kv_usage=kv,
        adapters=frozenset(adapters),
        at=at,
        inflight=inflight,
    )


class MetricsScraper:
    def __init__(self, board: SignalBoard, config: SignalsConfig) -> None:
        self.board = board
        self.config = config
        self.targets: Mapping[str, ScrapeTarget] = {}
        self.errors: dict[str, int] = {}
        self.scrapes = 0
        self.cpu_s = 0.0
        """CPU time spent parsing and publishing (for the cost measurement)."""
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return (
            f"MetricsScraper(targets={len(self.targets)}, scrapes={self.scrapes}, "
            f"errors={sum(self.errors.values())})"
        )

    def set_targets(self, targets: Mapping[str, ScrapeTarget]) -> None:
        self.targets = dict(targets)

    async def _fetch(self, target: ScrapeTarget, sem: asyncio.Semaphore) -> EndpointLoad | None:
        assert self._session is not None
        async with sem:
            # This worker's in-flight picks there as the scrape leaves: picks made after
            # it (not yet in the server's queue) are the difference from the count then.
            inflight = self.board.inflight.get(target.address)
            try:
                async with self._session.get(target.url) as r:
                    if r.status != 200:
                        raise aiohttp.ClientResponseError(
                            r.request_info, (), status=r.status, message="not 200"
                        )
                    text = await r.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                n = self.errors.get(target.address, 0) + 1
                self.errors[target.address] = n
                if n == 1 or n % 100 == 0:
                    log.warning("cannot scrape %s (%s): %s", target.url, n, exc)
                return None
        t0 = time.process_time()
        load = parse_load(text, target.families, time.monotonic(), inflight)
        self.cpu_s += time.process_time() - t0
        return load

    async def scrape_once(self) -> None:
        targets = self.targets
        if not targets:
            if self.board.load.endpoints:
                self.board.load = LoadSnapshot(stale_after_s=self.board.load.stale_after_s)
            return
        sem = asyncio.Semaphore(self.config.max_concurrent_scrapes)
        addresses = list(targets)
        loads = await asyncio.gather(*(self._fetch(targets[a], sem) for a in addresses))
        previous = self.board.load.endpoints
        merged = {}
        for address, load in zip(addresses, loads, strict=True):
            if load is not None:
                merged[address] = load
            elif address in previous:
                merged[address] = previous[address]  # goes stale on its own
        self.board.load = LoadSnapshot(merged, self.config.stale_after_ms / 1000)
        self.scrapes += 1

    async def run(self) -> None:
        cfg = self.config
        timeout = aiohttp.ClientTimeout(total=cfg.scrape_timeout_ms / 1000)
        connector = aiohttp.TCPConnector(limit=cfg.max_concurrent_scrapes, keepalive_timeout=60)
        async with aiohttp.ClientSession(
            timeout=timeout, connector=connector, trust_env=False
        ) as self._session:
            while True:
                started = time.monotonic()
                await self.scrape_once()
                await asyncio.sleep(
                    max(0.0, cfg.scrape_interval_ms / 1000 - (time.monotonic() - started))
                )
