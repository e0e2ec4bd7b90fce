"""Live signals the scorers read: load scraped from model servers, latency and outcomes
from Envoy's access logs, ejections, and this worker's own in-flight picks.

Everything here is data. The control plane gathers the signals off the request path
(:mod:`extproc.control.signals`) and *replaces* the immutable snapshots on the
:class:`SignalBoard`; the hot path reads them with one attribute load and never waits.
The one thing the hot path writes is :class:`InflightTracker` (and the prefix index a
scorer keeps): the router sees every pick as it makes it, so its own in-flight count is
fresh at every decision, with no scrape delay.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class EndpointLoad:
    """What one model server's metrics said at one scrape (``None``: not reported)."""

    waiting: float | None = None
    """Requests queued (vLLM ``num_requests_waiting``, Triton pending requests)."""
    running: float | None = None
    kv_usage: float | None = None
    """KV-cache utilisation in [0, 1]."""
    adapters: frozenset[str] = frozenset()
    """LoRA adapters the server reports loaded."""
    at: float = 0.0
    """``time.monotonic()`` of the scrape."""
    inflight: int = 0
    """This worker's in-flight picks on the endpoint when the scrape left (see
    :func:`waiting_now`)."""


@dataclass(frozen=True, slots=True)
class EndpointLatency:
    """Exponentially weighted averages from access-log entries (seconds)."""

    ttfb_s: float | None = None
    """Time to the first upstream byte (a proxy for time to first token)."""
    duration_s: float | None = None
    samples: int = 0


@dataclass(frozen=True, slots=True)
class LoadSnapshot:
    """Every scraped endpoint's load at one moment, by ``ip:port``."""

    endpoints: Mapping[str, EndpointLoad] = field(default_factory=dict)
    stale_after_s: float = 2.0
    """Load older than this is stale: it counts as saturated."""

    def get(self, address: str) -> EndpointLoad | None:
        return self.endpoints.get(address)

    def is_stale(self, load: EndpointLoad | None, now: float) -> bool:
        return load is None or now - load.at > self.stale_after_s

    def __repr__(self) -> str:
        return f"LoadSnapshot(endpoints={len(self.endpoints)}, stale_after_s={self.stale_after_s})"


class InflightTracker:
    """Requests this worker routed that Envoy has not reported finished, per endpoint.

    :meth:`acquire` at pick time (the hot path), :meth:`release` with the request id
    when the access log says the request ended, :meth:`expire` for picks whose log
    entry never came (Envoy drops entries when its buffer overflows). Request ids may
    repeat (a client can send its own ``x-request-id``): each acquire is released once.
    Bounded: past ``max_open`` the oldest open pick is released and counted as expired.
    """

    __slots__ = ("_by_request", "_open", "_seq", "counts", "expired", "max_open", "released",
                 "timeout_s")  # fmt: skip

    def __init__(self, *, timeout_s: float = 900.0, max_open: int = 200_000) -> None:
        self.counts: dict[str, int] = {}
        self._open: OrderedDict[int, tuple[str, str, float]] = OrderedDict()
        self._by_request: dict[str, list[int]] = {}
        self._seq = 0
        self.timeout_s = timeout_s
        self.max_open = max_open
        self.released = 0
        self.expired = 0

    def __repr__(self) -> str:
        return (
            f"InflightTracker(open={len(self._open)}, by_endpoint={dict(self.counts)}, "
            f"released={self.released}, expired={self.expired})"
        )

    def get(self, address: str) -> int:
        return self.counts.get(address, 0)

    @property
    def open(self) -> int:
        return len(self._open)

    def acquire(self, address: str, request_id: str, now: float | None = None) -> None:
        self._seq += 1
        at = time.monotonic() if now is None else now
        self._open[self._seq] = (request_id, address, at)
        self._by_request.setdefault(request_id, []).append(self._seq)
        self.counts[address] = self.counts.get(address, 0) + 1
        if len(self._open) > self.max_open:
            self._drop(next(iter(self._open)))
            self.expired += 1

    def _drop(self, seq: int) -> str:
        request_id, address, _ = self._open.pop(seq)
        seqs = self._by_request[request_id]
        seqs.remove(seq)
        if not seqs:
            del self._by_request[request_id]
        left = self.counts[address] - 1
        if left:
            self.counts[address] = left
        else:
            del self.counts[address]
        return address

    def release(self, request_id: str) -> str | None:
        """The endpoint the (oldest open) pick for ``request_id`` went to, if any."""
        seqs = self._by_request.get(request_id)
        if not seqs:
            return None
        self.released += 1
        return self._drop(seqs[0])

    def expire(self, now: float | None = None) -> int:
        """Release picks older than ``timeout_s``; how many."""
        limit = (time.monotonic() if now is None else now) - self.timeout_s
        n = 0
        while self._open:
            seq, (_, _, at) = next(iter(self._open.items()))
            if at > limit:
                break
            self._drop(seq)
            n += 1
        self.expired += n
        return n


class SignalBoard:
    """The hot path's view of live signals: immutable snapshots the control plane
    swaps in, plus this worker's in-flight picks. One board per worker, shared by
    every :class:`~extproc.core.flow.RouterState` it builds."""

    __slots__ = ("ejected", "inflight", "latency", "load", "worker_id")

    def __init__(self, worker_id: str = "", *, inflight: InflightTracker | None = None) -> None:
        self.worker_id = worker_id
        """Tags this worker's decisions (``x-model-router-worker``) so Envoy's access log
        entries for them come back to this worker."""
        self.load = LoadSnapshot()
        self.latency: Mapping[str, EndpointLatency] = {}
        self.ejected: Mapping[str, float] = {}
        """Endpoint -> ``time.monotonic()`` until which it is out (passive ejection)."""
        self.inflight = inflight or InflightTracker()

    def __repr__(self) -> str:
        return (
            f"SignalBoard(worker={self.worker_id!r}, {self.load!r}, "
            f"latency={len(self.latency)}, ejected={sorted(self.ejected)}, {self.inflight!r})"
        )


def waiting_now(ep: EndpointLoad, inflight_now: int) -> float | None:
    """The endpoint's queue now, estimated: the scraped queue plus this worker's picks
    there since the scrape left, less those that finished (``inflight_now`` minus the
    count then). Only a server that was queueing gets the picks added: one with free
    slots may have started them at once, so its scraped queue stands until the next
    scrape. Between scrapes at high request rates this keeps admission from
    overshooting by a scrape interval's worth of arrivals."""
    waiting = ep.waiting
    if not waiting:
        return waiting
    return max(0.0, waiting + inflight_now - ep.inflight)
