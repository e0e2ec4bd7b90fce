"""The gRPC pump: one ext_proc stream in, one :class:`~extproc.core.flow.RequestFlow` driven.

All request logic is in the flow; the pump reads messages, feeds them, writes the
answers, times the phases and is the per-request boundary for unexpected errors
(logged with the traceback, counted, answered with a JSON 500).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

from extproc.core.errors import InternalError, Overloaded
from extproc.core.flow import Phase, RequestFlow, RouterState
from extproc.core.protocols.json_body import declared_length
from extproc.server.logs import log_outcome
from extproc.server.metrics import Metrics

log = logging.getLogger("extproc.server")


def _clock() -> float:
    return time.perf_counter()


class CurrentState:
    """The state new streams start on; the reloader swaps ``state`` (one attribute store)."""

    __slots__ = ("state",)

    def __init__(self, state: RouterState) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"CurrentState({self.state!r})"


class LargeBodyGate:
    """At most ``limit`` large bodies (``threshold`` bytes or more, by ``content-length``)
    are read by this worker at once. Envoy holds a request's buffered body until the
    router answers its headers, so a large request waits here, for at most ``wait_s``,
    before its body crosses the gRPC connection; past that it gets a JSON 429 (with
    ``failure_mode: open``: it continues unchecked on its own model's fail-open route). A
    flood of large bodies then cannot fill the connection and the event loop that small
    requests share (see README "Big bodies")."""

    def __init__(self, threshold: int, limit: int, wait_s: float, *, fail_open: bool) -> None:
        self.threshold = threshold
        self.limit = limit
        self.wait_s = wait_s
        self.fail_open = fail_open
        """Shed requests continue unchecked on their own model's fail-open route (else 429)."""
        self.inside = 0
        self.shed = 0
        self._slots = asyncio.Semaphore(limit)

    def __repr__(self) -> str:
        return (
            f"LargeBodyGate(threshold={self.threshold}, inside={self.inside}/{self.limit}, "
            f"shed={self.shed}, fail_open={self.fail_open})"
        )

    def turn_away(self, flow: RequestFlow) -> ep.ProcessingResponse:
        """The answer for a large request that found no slot in time."""
        if self.fail_open:
            return flow.let_pass()
        return flow.fail(
            Overloaded(
                f"{self.limit} large request bodies (>= {self.threshold} bytes) are being "
                "read; retry shortly",
                retry_after_s=1,
                reason="large_bodies",
            )
        )

    def is_large(self, flow: RequestFlow) -> bool:
        head = flow.head
        if flow.phase is not Phase.BODY or head is None or self.limit <= 0:
            return False
        length = declared_length(head)
        return length is not None and length >= self.threshold

    async def enter(self) -> bool:
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait_s)
        except TimeoutError:
            self.shed += 1
            return False
        self.inside += 1
        return True

    def leave(self) -> None:
        self.inside -= 1
        self._slots.release()


class ExternalProcessor(ep_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """One ext_proc stream = one HTTP request; all logic is in the flow."""

    def __init__(
        self, current: CurrentState, metrics: Metrics, gate: LargeBodyGate | None = None
    ) -> None:
        self._current = current
        self._metrics = metrics
        self._gate = gate

    async def Process(
        self,
        request_iterator: AsyncIterator[ep.ProcessingRequest],
        context: grpc.aio.ServicerContext[ep.ProcessingRequest, ep.ProcessingResponse],
    ) -> None:
        # read()/write() rather than an async generator: less machinery per message.
        metrics = self._metrics
        flow = RequestFlow(self._current.state)
        read, write, eof = context.read, context.write, grpc.aio.EOF
        metrics.inflight.inc()
        opened = _clock()
        first: float | None = None
        answered_headers: float | None = None
        transfer: float | None = None
        busy = 0.0
        gated = False
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
                busy += t1 - t0  # the router's own work, not the wait below
                if not gated and self._gate is not None and self._gate.is_large(flow):
                    gated = await self._gate.enter()
                    if not gated:
                        resp = self._gate.turn_away(flow)
                        t1 = _clock()
                done = flow.phase is Phase.DONE
                if done:  # record first: Envoy may cancel the stream once it has the answer
                    metrics.observe(
                        flow.outcome, decision_s=busy, in_router_s=t1 - first,
                        body_transfer_s=transfer,
                    )  # fmt: skip
                    log_outcome(flow)
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
            if gated:
                assert self._gate is not None
                self._gate.leave()
            metrics.inflight.dec()
            metrics.observe_stream(_clock() - opened)
