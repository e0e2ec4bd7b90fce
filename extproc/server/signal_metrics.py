"""Live signals in ``/metrics``, read from the worker's board when Prometheus scrapes.

Nothing is updated on the request path: a custom collector reads the board's current
snapshots at scrape time. Labels are the registry's deployments and endpoints (never
client input), so the label sets are bounded by the registry.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from extproc.control.signals import SignalCollector

_NS = "model_router"


class SignalMetrics(Collector):
    def __init__(self, collector: SignalCollector) -> None:
        self.collector = collector

    def __repr__(self) -> str:
        return f"SignalMetrics({self.collector.board!r})"

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        board = self.collector.board
        where = self.collector.ejection.deployments
        now = time.monotonic()
        labels = ["deployment", "endpoint"]

        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{_NS}_endpoint_{name}", doc, labels=labels)

        inflight = gauge("inflight", "Requests this worker routed there, not yet finished.")
        waiting = gauge("queue", "Waiting requests the model server reported (last scrape).")
        kv = gauge("kv_cache_usage", "KV-cache utilisation the model server reported, 0-1.")
        stale = gauge("load_stale", "1 when the scraped load is stale (counts as saturated).")
        ttfb = gauge("ttfb_seconds", "EWMA of time to first upstream byte (access log).")
        ejected = gauge("ejected", "1 while the endpoint is passively ejected.")
        for address, deployment in sorted(where.items()):
            values = [deployment, address]
            inflight.add_metric(values, board.inflight.get(address))
            ejected.add_metric(values, 1.0 if board.ejected.get(address, 0.0) > now else 0.0)
            load = board.load.get(address)
            if address in self.collector.scraper.targets:
                stale.add_metric(values, 1.0 if board.load.is_stale(load, now) else 0.0)
            if load is not None and load.waiting is not None:
                waiting.add_metric(values, load.waiting)
            if load is not None and load.kv_usage is not None:
                kv.add_metric(values, load.kv_usage)
            lat = board.latency.get(address)
            if lat is not None and lat.ttfb_s is not None:
                ttfb.add_metric(values, lat.ttfb_s)
        yield from (inflight, waiting, kv, stale, ttfb, ejected)
        responses = CounterMetricFamily(
            f"{_NS}_endpoint_responses",
            "Responses of the requests this worker routed, per registry endpoint and status "
            "class (2xx..5xx, none: no response), as Envoy's access log reported them.",
            labels=[*labels, "code"],
        )
        for (address, code), count in sorted(self.collector.access_log.responses.items()):
            owner = where.get(address)
            if owner is not None:
                responses.add_metric([owner, address, code], count)
        yield responses
        tracker = board.inflight
        yield CounterMetricFamily(
            f"{_NS}_inflight_released", "Picks released by their access-log entry.",
            value=tracker.released,
        )  # fmt: skip
        yield CounterMetricFamily(
            f"{_NS}_inflight_expired",
            "Picks released by timeout: their access-log entry never came.",
            value=tracker.expired,
        )
        yield GaugeMetricFamily(
            f"{_NS}_inflight_open", "Picks of this worker not yet finished.", value=tracker.open
        )
        yield CounterMetricFamily(
            f"{_NS}_access_log_entries", "Envoy access-log entries received.",
            value=self.collector.access_log.entries,
        )  # fmt: skip
        yield CounterMetricFamily(
            f"{_NS}_scrape_errors", "Failed scrapes of model-server metrics.",
            value=sum(self.collector.scraper.errors.values()),
        )  # fmt: skip
        yield CounterMetricFamily(
            f"{_NS}_ejections", "Passive ejections of failing endpoints.",
            value=self.collector.ejection.ejections,
        )  # fmt: skip
