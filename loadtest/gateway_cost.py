"""Micro-benchmark: what the gateway adds to the router's CPU per request, in-process.

The ext_proc flow for a KServe ``infer`` call decided on headers (the bench's
``headers`` row), without ``auth``, then with an API key of a tenant with request and
concurrency quotas (the ``headers_gateway`` row: hash + lookup, model check, two quota
buckets, and the access-log entry's release of the concurrency slot), then the same
with the quotas shared through Redis (leases: the hot path does not touch Redis; the
background sync is not in this number, see ``scripts/bench``'s Redis ops per request).
Interleaved rounds, the median of each, so other work on the machine shifts all alike.

Run: ``python -m loadtest.gateway_cost`` from the repository root.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from extproc.control.compile import compile_routing, router_state
from extproc.control.gateway.keys import entry_for
from extproc.control.loading import parse_config
from extproc.control.registry import RegistryInputs, StaticRegistry
from extproc.core.envoy_wire import processing_messages
from extproc.core.flow import RequestFlow, RouterState
from extproc.core.gateway.quota import QuotaBook

N = 5000
ROUNDS = 7
KEY = "mr-benchmark-key-0123456789abcdefghijklmnopqrstuvwxyz"
PATH = "/v2/models/m/infer"
ROUTES = """
models:
  m: {protocol: kserve_v2, versions: ["1"], native: false}
deployments:
  - {name: a, model: m, version: "1", endpoints: ["127.0.0.1:8001"]}
  - {name: b, model: m, version: "1", endpoints: ["127.0.0.1:8002"]}
"""
GATEWAY = """
auth: {{keys_file: "{keys}"}}
tenants:
  bench: {{quotas: {{requests_per_minute: 1000000000, concurrent_requests: 100000}}}}
"""


def state(text: str, book: QuotaBook | None = None) -> RouterState:
    compiled = compile_routing(parse_config(text), "<bench>")
    registry = StaticRegistry(RegistryInputs.of(compiled))
    asyncio.run(registry.start())
    return router_state(compiled, registry.snapshot, quotas=book)


def per_request_us(st: RouterState, headers: list[tuple[str, str]]) -> float:
    msgs = [processing_messages("POST", PATH, [*headers, ("x-request-id", f"r{i}")], b"{}")[0]
            for i in range(N)]  # fmt: skip
    book = st.gateway.quotas if st.gateway is not None else None
    t0 = time.process_time()
    for msg in msgs:
        flow = RequestFlow(st)
        flow.receive(msg)
        assert flow.outcome.decision is not None, flow.outcome.error
        if book is not None:  # the access-log entry's part: the slot returns
            book.finish(flow.outcome.request.head.request_id)  # type: ignore[union-attr]
    return (time.process_time() - t0) / N * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys.yaml"
        keys.write_text(json.dumps({"keys": [entry_for(KEY, name="bench", tenant="bench")]}))
        gateway = GATEWAY.format(keys=keys) + ROUTES
        shared = QuotaBook(shared=True, lease_fraction=0.05)
        rows = {
            "headers": (state(ROUTES), []),
            "gateway (local)": (state(gateway), [("x-api-key", KEY)]),
            "gateway (redis)": (state(gateway, shared), [("x-api-key", KEY)]),
        }
        for b in shared.buckets.values():  # a lease already granted, as the sync would
            b.granted, b.total = 10**9, 0
        times: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(ROUNDS):
            for name, (st, headers) in rows.items():
                times[name].append(per_request_us(st, headers))
    base = statistics.median(times["headers"])
    print(f"{N} requests x {ROUNDS} rounds, median CPU per request (ext_proc flow only):")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<16} {med:7.1f} us   x{med / base:.3f}")


if __name__ == "__main__":
    main()
