"""How far shared quotas overshoot when workers admit as fast as they can: several
quota books (one per simulated worker) with their Redis syncers, against one real
``redis-server``, each admitting requests of one tenant in a tight loop until every
worker has been refused many times in a row; then the admitted total is compared with
the limit and with the bound the README states (``workers x lease``).

Run: ``python -m loadtest.quota_overshoot`` (needs redis-server: scripts/install-redis).
Bounded: each case stops after 20 s at the latest, and waits for a fresh window first.
"""

from __future__ import annotations

import asyncio
import math
import sys
import tempfile
import time
from pathlib import Path

from extproc.control.gateway.schema import RedisConfig
from extproc.control.gateway.store import RedisQuotaStore
from extproc.core.errors import QuotaExceeded
from extproc.core.gateway.quota import Limits, QuotaBook, TenantQuotas
from extproc.dev.redis_server import RedisServer, redis_server_binary

CASES = [(4, 1000, 0.05), (4, 10000, 0.05), (8, 10000, 0.02), (4, 100000, 0.05)]
"""(workers, requests per minute, lease fraction)."""


async def case(url: str, workers: int, limit: int, fraction: float, prefix: str) -> str:
    config = RedisConfig(url=url, key_prefix=prefix, sync_interval_ms=100)
    books, stores = [], []
    for i in range(workers):
        book = QuotaBook(shared=True, lease_fraction=fraction)
        book.configure({"t": TenantQuotas(Limits(requests_per_minute=limit))}, workers)
        store = RedisQuotaStore(book, config, worker=f"w{i}")
        store.start()
        books.append(book)
        stores.append(store)
    left = 60 - time.time() % 60
    if left < 25:  # one case fits in one window
        await asyncio.sleep(left + 0.2)
    window = int(time.time() // 60)
    admitted = [0] * workers
    deadline = time.monotonic() + 20

    async def run(i: int) -> None:
        refused = n = 0
        while refused < 200 and time.monotonic() < deadline:
            n += 1
            try:
                books[i].admit("t", "m", 0, f"{i}-{n}")
            except QuotaExceeded:
                refused += 1
                await asyncio.sleep(0.001)
            else:
                admitted[i] += 1
                refused = 0
            if n % 8 == 0:
                await asyncio.sleep(0)  # let the syncers run

    await asyncio.gather(*(run(i) for i in range(workers)))
    for store in stores:
        await store.stop()
    total = sum(admitted)
    lease = max(1, math.ceil(limit * fraction))
    same = "" if int(time.time() // 60) == window else " (CROSSED A WINDOW: ignore)"
    return (
        f"workers {workers:2}  limit {limit:6}  lease {lease:5}  admitted {total:6}  "
        f"overshoot {total - limit:5} ({100 * (total - limit) / limit:5.2f}%)  "
        f"bound {workers * lease:5}  redis ops {sum(s.ops for s in stores):4}{same}"
    )


async def main() -> int:
    binary = redis_server_binary()
    if binary is None:
        print("no redis-server: run scripts/install-redis", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        async with RedisServer(binary, Path(tmp)) as redis:
            for i, (workers, limit, fraction) in enumerate(CASES):
                print(await case(redis.url, workers, limit, fraction, f"case{i}"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
