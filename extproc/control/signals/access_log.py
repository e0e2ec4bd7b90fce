"""Envoy's gRPC access-log stream: when a request the router picked has ended.

Envoy sends each worker the entries of the requests that worker decided (its access
loggers filter on ``x-model-router-worker``). Each entry releases the request's
in-flight count, updates the serving endpoint's latency averages (time to first
upstream byte, duration) and feeds passive ejection (5xx or a connect failure counts as
a failure). The latency map on the board is replaced, never mutated, after each batch.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection
from typing import Any

import grpc
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from extproc.control.signals.ejection import EjectionTracker
from extproc.core.gateway.quota import QuotaBook
from extproc.core.signals import EndpointLatency, SignalBoard

log = logging.getLogger("extproc.control.signals")

USAGE_NAMESPACE = "model_router.usage"
"""Where Envoy's json_to_metadata puts a JSON response's ``usage`` (the bootstrap's
response rules): ``prompt_tokens`` and ``completion_tokens``."""


def used_tokens(entry: accesslog_pb2.HTTPAccessLogEntry) -> int | None:
    """The response's real token usage, when Envoy read it from a JSON body (``None``:
    a stream, an error, or no ``usage``: the reservation stands)."""
    ns = entry.common_properties.metadata.filter_metadata.get(USAGE_NAMESPACE)
    if ns is None:
        return None
    fields = ns.fields
    if "completion_tokens" not in fields and "prompt_tokens" not in fields:
        return None
    total = 0.0
    for key in ("prompt_tokens", "completion_tokens"):
        value = fields.get(key)
        if value is not None:
            total += value.number_value
    return max(0, int(total))


def _seconds(d: Any) -> float | None:
    """A protobuf Duration field as seconds (``None`` when unset)."""
    if d.seconds == 0 and d.nanos == 0:
        return None
    return float(d.seconds + d.nanos / 1e9)


def upstream_address(entry: accesslog_pb2.HTTPAccessLogEntry) -> str | None:
    sa = entry.common_properties.upstream_remote_address.socket_address
    if not sa.address:
        return None
    return (
        f"[{sa.address}]:{sa.port_value}" if ":" in sa.address else f"{sa.address}:{sa.port_value}"
    )


def failed(entry: accesslog_pb2.HTTPAccessLogEntry) -> bool:
    flags = entry.common_properties.response_flags
    if flags.upstream_connection_failure or flags.upstream_connection_termination:
        return True
    return entry.response.response_code.value >= 500 and bool(
        entry.common_properties.upstream_remote_address.socket_address.address
    )


def code_class(entry: accesslog_pb2.HTTPAccessLogEntry) -> str:
    """``2xx`` ... ``5xx`` from the response code; ``none`` when there was none (a reset)."""
    code = entry.response.response_code.value
    return f"{code // 100}xx" if 100 <= code < 600 else "none"


class AccessLogReceiver(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    def __init__(self, board: SignalBoard, ejection: EjectionTracker, *, alpha: float) -> None:
        self.board = board
        self.ejection = ejection
        self.alpha = alpha
        self.quotas: QuotaBook | None = None
        """The tenant quota book: an entry returns the request's concurrency slot and
        replaces its token reservation by the real usage."""
        self.reconciled = 0
        self.entries = 0
        self.unmatched = 0
        """Entries for requests this worker has no open pick for (expired, or natively
        routed requests Envoy logs anyway)."""
        self.responses: dict[tuple[str, str], int] = {}
        """Responses per (registry endpoint, code class), as Envoy logged them: only
        addresses of the registry's endpoints are kept (:meth:`forget_endpoints_not_in`)."""

    def __repr__(self) -> str:
        return f"AccessLogReceiver(entries={self.entries}, unmatched={self.unmatched})"

    def _update(
        self,
        current: dict[str, EndpointLatency],
        address: str,
        ttfb: float | None,
        total: float | None,
    ) -> None:
        old = current.get(address) or EndpointLatency()
        a = self.alpha

        def ewma(prev: float | None, sample: float | None) -> float | None:
            if sample is None:
                return prev
            return sample if prev is None else prev + a * (sample - prev)

        current[address] = EndpointLatency(
            ttfb_s=ewma(old.ttfb_s, ttfb),
            duration_s=ewma(old.duration_s, total),
            samples=old.samples + 1,
        )

    def consume(self, logs: als_pb2.StreamAccessLogsMessage.HTTPAccessLogEntries) -> None:
        """One batch of entries (public for tests and the stream below)."""
        latency: dict[str, EndpointLatency] | None = None
        for entry in logs.log_entry:
            self.entries += 1
            request_id = entry.request.request_id
            if self.board.inflight.release(request_id) is None:
                self.unmatched += 1
            quotas = self.quotas
            if quotas is not None:
                tokens = used_tokens(entry)
                if quotas.finish(request_id, tokens) and tokens is not None:
                    self.reconciled += 1
            address = upstream_address(entry)
            if address is None:
                continue
            self.ejection.outcome(address, failed(entry))
            if address in self.ejection.deployments:
                key = (address, code_class(entry))
                self.responses[key] = self.responses.get(key, 0) + 1
            common = entry.common_properties
            ttfb = _seconds(common.time_to_first_upstream_rx_byte)
            if ttfb is None and not common.HasField("duration"):
                continue
            if latency is None:
                latency = dict(self.board.latency)
            self._update(latency, address, ttfb, _seconds(common.duration))
        if latency is not None:
            self.board.latency = latency

    def forget_endpoints_not_in(self, addresses: Collection[str]) -> None:
        """Drop the response counts of endpoints that left the registry (bounded labels)."""
        gone = [key for key in self.responses if key[0] not in addresses]
        for key in gone:
            del self.responses[key]

    async def StreamAccessLogs(
        self,
        request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> als_pb2.StreamAccessLogsResponse:
        async for message in request_iterator:
            if message.HasField("http_logs"):
                self.consume(message.http_logs)
        return als_pb2.StreamAccessLogsResponse()
