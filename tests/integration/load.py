"""Bounded load for fault tests: a few concurrent callers on loopback, each outcome counted.

Every loop stops on ``stop()`` or at its deadline (20 s at most), whichever comes first;
nothing here asserts a time: tests assert the counts.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support import http_error

MAX_CASE_S = 20.0


@dataclass(frozen=True)
class Call:
    """One request of the mix, and the model that must serve it."""

    model: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def outcome(call: Call, r: httpx.Response) -> str:
    """``ok`` (200 from its own model), ``json-<status>-<type>`` for a JSON error, else
    ``bad:...`` (wrong model, non-JSON error)."""
    if r.status_code == 200:
        served = r.headers.get("x-served-model")
        return "ok" if served == call.model else f"bad:wrong-model:{call.model}->{served}"
    try:
        kind = http_error(r)["type"]  # the path's protocol shape, type from the header
    except (ValueError, KeyError, TypeError, AssertionError):
        return f"bad:{r.status_code}:not-json:{r.text[:60]!r}"
    return f"json-{r.status_code}-{kind}"


class Load:
    """``concurrency`` callers cycling through ``calls`` until stopped or the deadline."""

    def __init__(
        self,
        url: str,
        calls: Sequence[Call],
        *,
        concurrency: int = 6,
        max_s: float = MAX_CASE_S,
        timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self.calls = list(calls)
        self.concurrency = concurrency
        self.deadline = time.monotonic() + max_s
        self.counts: Counter[str] = Counter()
        self.marked = 0
        """Responses marked ``x-model-router-fail-open: 1``."""
        self.log: list[tuple[float, str]] = []
        self._stop = asyncio.Event()
        self._client = httpx.AsyncClient(trust_env=False, timeout=timeout_s)
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return f"Load({self.url}, counts={dict(self.counts)}, marked={self.marked})"

    async def _caller(self, i: int) -> None:
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            call = self.calls[i % len(self.calls)]
            i += 1
            try:
                r = await self._client.post(self.url + call.path, json=call.body,
                                            headers=call.headers)  # fmt: skip
            except httpx.HTTPError as exc:
                self.counts[f"bad:exception:{type(exc).__name__}"] += 1
                continue
            what = outcome(call, r)
            self.counts[what] += 1
            self.log.append((time.monotonic(), what))
            if r.headers.get("x-model-router-fail-open") == "1":
                self.marked += 1

    def start(self) -> Load:
        self._tasks = [
            asyncio.create_task(self._caller(i), name=f"load-{i}") for i in range(self.concurrency)
        ]
        return self

    def ok(self) -> int:
        return self.counts["ok"]

    def errors(self) -> Counter[str]:
        return Counter({k: v for k, v in self.counts.items() if k != "ok"})

    def ok_since(self, t: float) -> int:
        return sum(1 for at, what in self.log if at >= t and what == "ok")

    def errors_since(self, t: float) -> int:
        return sum(1 for at, what in self.log if at >= t and what != "ok")

    async def stop(self) -> Counter[str]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._client.aclose()
        return self.counts
