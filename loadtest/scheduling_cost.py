"""Scheduling plus signal bookkeeping per request, in-process, with 64 endpoints.

For each built-in profile: one ``Scheduler.schedule`` (filters, scorers, picker) for a
1 KiB chat request, plus the in-flight acquire at the pick and its release from an
access-log entry (the bookkeeping every routed request costs). Load and latency are
fresh for every endpoint, so every scorer does its full work. Best of 5 rounds.

    python -m loadtest.scheduling_cost [--endpoints 64] [--rounds 5] [--n 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2

from extproc.control.compile import compile_routing, router_state
from extproc.control.loading import parse_config
from extproc.control.registry import RegistryInputs, StaticRegistry
from extproc.control.schema import EjectionConfig
from extproc.control.signals.access_log import AccessLogReceiver
from extproc.control.signals.ejection import EjectionTracker
from extproc.core.protocols import understand_body, understand_head
from extproc.core.request import InferenceRequest, RequestHead
from extproc.core.signals import EndpointLatency, EndpointLoad, LoadSnapshot, SignalBoard

PROFILES = ("default", "least-inflight", "gie-default", "load-aware")


def routes(n: int, profile: str) -> str:
    eps = ", ".join(f'"10.0.{i // 250}.{i % 250 + 1}:8000"' for i in range(n))
    return (
        f"scheduling: {{profile: {profile}}}\n"
        "models: {chat: {protocol: openai, versions: ['1']}}\n"
        f"deployments: [{{name: d, model: chat, version: '1', endpoints: [{eps}]}}]\n"
    )


def chat_request() -> InferenceRequest:
    head = RequestHead("POST", "/v1/chat/completions", {"content-type": "application/json"})
    body = (
        b'{"model":"chat","messages":[{"role":"system","content":"'
        + b"You are a helpful assistant. " * 30
        + b'"},{"role":"user","content":"hello"}]}'
    )
    need = understand_head(head)
    assert not isinstance(need, InferenceRequest)
    return understand_body(head, need, body, 1 << 20)


def measure(n_endpoints: int, profile: str, rounds: int, n: int) -> float:
    compiled = compile_routing(parse_config(routes(n_endpoints, profile)))
    registry = StaticRegistry(RegistryInputs.of(compiled))
    asyncio.run(registry.start())
    board = SignalBoard("bench")
    now = time.monotonic()
    snapshot = registry.snapshot
    assert snapshot is not None
    addresses = [e.address for e in snapshot.models["chat"].deployments[0].endpoints]
    board.load = LoadSnapshot(
        {
            a: EndpointLoad(waiting=i % 7, running=3, kv_usage=(i % 10) / 10, at=now + 3600)
            for i, a in enumerate(addresses)
        }
    )
    board.latency = {
        a: EndpointLatency(ttfb_s=0.05 + (i % 5) / 100, samples=10) for i, a in enumerate(addresses)
    }
    state = router_state(compiled, snapshot, board)
    receiver = AccessLogReceiver(board, EjectionTracker(board, EjectionConfig()), alpha=0.2)
    request = chat_request()
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.request.request_id = "r"
    batch = als_pb2.StreamAccessLogsMessage.HTTPAccessLogEntries(log_entry=[entry])
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            decision = state.scheduler.schedule(request, snapshot, None, None, board)
            board.inflight.acquire(decision.endpoints[0], "r")
            receiver.consume(batch)  # the release, as the access log brings it
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoints", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n", type=int, default=5000)
    a = p.parse_args()
    for profile in PROFILES:
        us = measure(a.endpoints, profile, a.rounds, a.n)
        print(f"{profile:<15} {a.endpoints} endpoints: {us:7.1f} us per request", flush=True)


if __name__ == "__main__":
    main()
