"""One timed request of the scheduling scenarios (streamed chat through Envoy)."""

from __future__ import annotations

import time
from typing import Any

import aiohttp


async def timed_stream(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, float, float]:
    """POST ``body`` and read the (streamed) answer: ``(status, time to its first chunk,
    time to its end)`` in seconds; status 0 when the connection failed."""
    start = time.monotonic()
    first: float | None = None
    try:
        async with session.post(url, json=body, headers=headers or {}) as r:
            if r.status != 200:
                await r.read()
                end = time.monotonic()
                return r.status, end - start, end - start
            async for _ in r.content.iter_any():
                if first is None:
                    first = time.monotonic()
    except (aiohttp.ClientError, TimeoutError):
        return 0, 0.0, 0.0
    end = time.monotonic()
    return 200, (first or end) - start, end - start
