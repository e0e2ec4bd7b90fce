"""Quotas shared by every worker and replica through Redis, off the request path.

The hot path admits from local leases (:class:`~extproc.core.gateway.quota.QuotaBook`);
this syncer tops the leases up and sends what was used beyond them, in one pipelined
round trip per round: every ``sync_interval_ms``, and at once when a lease runs low.
Each bucket is one Lua script call, so a round is atomic per bucket:

* windowed limits (requests and tokens per minute): one counter per tenant, scope and
  one-minute window (``<prefix>:w:<tenant>|<model>|<kind>:<window>``, expiring after
  the window); the script adds the worker's claim (units already used beyond its lease:
  always counted) and grants up to one lease more while the window has room;
* concurrent requests: one hash per scope, a field per worker holding its slots and
  when they expire (``slot_ttl_s`` after its last sync), so a dead worker's slots
  return to the others.

Redis down or slower than ``timeout_ms`` for ``down_after_s``: the book is told
(``store_ok = False``) and applies ``on_store_error`` (each worker's share, or 503);
rounds go on, and the first that succeeds restores shared quotas, claims included: no
restart. ``staleness_s`` is how long the store has not answered (0 while it does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from extproc.control.gateway.schema import RedisConfig
from extproc.core.gateway.quota import CONCURRENT, WINDOW_S, Bucket, QuotaBook

log = logging.getLogger("extproc.control.gateway")

WINDOW_LUA = """
local taken = tonumber(redis.call('GET', KEYS[1]) or '0')
local claim = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local room = tonumber(ARGV[3]) - taken - claim
local grant = 0
if room > 0 then grant = math.min(want, room) end
if claim + grant > 0 then
  taken = redis.call('INCRBY', KEYS[1], claim + grant)
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return {grant, taken}
"""

SLOTS_LUA = """
local now = tonumber(ARGV[4])
local others = 0
local h = redis.call('HGETALL', KEYS[1])
for i = 1, #h, 2 do
  if h[i] ~= ARGV[1] then
    local held, exp = string.match(h[i + 1], '^(%d+):(%d+)$')
    if held == nil or tonumber(exp) < now then
      redis.call('HDEL', KEYS[1], h[i])
    else
      others = others + tonumber(held)
    end
  end
end
local used = tonumber(ARGV[6])
local grant = math.max(0, math.min(tonumber(ARGV[2]), tonumber(ARGV[3]) - others))
local hold = math.max(grant, used)
if hold > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], hold .. ':' .. (now + tonumber(ARGV[5])))
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {grant, others + hold}
"""


class RedisQuotaStore:
    """One worker's syncer between its :class:`QuotaBook` and Redis."""

    def __init__(self, book: QuotaBook, config: RedisConfig, *, worker: str = "") -> None:
        self.book = book
        self.config = config
        self.me = f"{socket.gethostname()}:{os.getpid()}:{worker}"
        """This worker's field in the concurrency hashes."""
        self.interval_s = config.sync_interval_ms / 1000
        self.timeout_s = config.timeout_ms / 1000
        self.down_after_s = max(1.0, 3 * self.interval_s, self.timeout_s)
        self.heartbeat_s = 1.0
        """With nothing to sync, a PING this often: an outage shows (metrics, fail-closed)
        even while every lease has room."""
        self.ops = 0
        """Redis commands sent (script calls, loads)."""
        self.rounds = 0
        self.failures = 0
        self.last_ok = time.monotonic()
        self._client: aioredis.Redis | None = None
        self._shas: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._beat: dict[str, float] = {}
        self._failing = False

    def __repr__(self) -> str:
        return (
            f"RedisQuotaStore(me={self.me!r}, up={self.book.store_ok}, ops={self.ops}, "
            f"rounds={self.rounds}, failures={self.failures})"
        )

    @property
    def staleness_s(self) -> float:
        return 0.0 if not self._failing else time.monotonic() - self.last_ok

    def start(self) -> None:
        self._client = aioredis.Redis.from_url(
            self.config.url,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            retry_on_timeout=False,
        )
        self.book.notify = self._wake.set
        self._task = asyncio.create_task(self._run(), name="quota-store-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self.sync_once()
            except (RedisError, OSError, TimeoutError) as exc:
                self._failed(exc)
            else:
                self._ok()

    def _ok(self) -> None:
        if self._failing:
            log.warning("quota store (Redis) answers again; shared quotas restored")
        self._failing = False
        self.book.store_ok = True

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        if not self._failing:
            self._failing = True
            log.error("quota store (Redis) did not answer: %s", exc or type(exc).__name__)
        if time.monotonic() - self.last_ok >= self.down_after_s and self.book.store_ok:
            self.book.store_ok = False
            mode = "each worker's share" if self.book.fail_open else "503 quota_unavailable"
            log.error("quota store (Redis) down; applying on_store_error: %s", mode)

    def _due(self, now: float) -> list[tuple[Bucket, list[Any]]]:
        """The buckets this round syncs, each with its script arguments."""
        window = int(time.time() // WINDOW_S)
        out: list[tuple[Bucket, list[Any]]] = []
        for b in list(self.book.buckets.values()):
            if b.kind == CONCURRENT:
                want = b.used + b.lease
                beat = self._beat.get(b.key, 0.0)
                idle = b.granted == 0 and b.used == 0 and b.total is None
                changed = (
                    b.used > b.granted
                    or b.granted - b.used < b.lease / 2
                    or (b.granted > want + b.lease)
                )
                if idle or not (changed or now - beat > self.config.slot_ttl_s / 3):
                    continue
                out.append((b, [want, b.used]))
            elif b.window == window and (b.claim or b.granted - b.used < b.lease):
                out.append((b, [b.claim, b.lease]))
        return out

    async def _sha(self, name: str, source: str) -> str:
        sha = self._shas.get(name)
        if sha is None:
            assert self._client is not None
            self.ops += 1
            sha = self._shas[name] = str(await self._client.script_load(source))
        return sha

    async def sync_once(self) -> int:
        """One round (public for tests): how many buckets it synced."""
        now = time.monotonic()
        due = self._due(now)
        self.rounds += 1
        if not due:
            await self._ping_if_idle(now)
            return 0
        try:
            results = await self._send(due, now)
        except ResponseError as exc:
            if "NOSCRIPT" not in str(exc):
                raise
            self._shas.clear()  # Redis restarted: load the scripts again
            results = await self._send(due, now)
        self.last_ok = now
        for (b, args), result in zip(due, results, strict=True):
            grant, total = int(result[0]), int(result[1])
            if b.kind == CONCURRENT:
                b.granted = grant
                self._beat[b.key] = now
            elif b.window == int(time.time() // WINDOW_S):
                b.granted += args[0] + grant
            else:
                continue
            b.total = total
        return len(due)

    async def _ping_if_idle(self, now: float) -> None:
        """Nothing to sync: still find out whether Redis is down, or back."""
        if self._failing or now - self.last_ok >= self.heartbeat_s:
            assert self._client is not None
            self.ops += 1
            await self._client.ping()  # type: ignore[misc]
            self.last_ok = now

    async def _send(self, due: list[tuple[Bucket, list[Any]]], now: float) -> list[Any]:
        assert self._client is not None
        window_sha = await self._sha("window", WINDOW_LUA)
        slots_sha = await self._sha("slots", SLOTS_LUA)
        prefix = self.config.key_prefix
        ttl_ms = int(self.config.slot_ttl_s * 1000)
        wall_ms = int(time.time() * 1000)
        pipe = self._client.pipeline(transaction=False)
        for b, args in due:
            if b.kind == CONCURRENT:
                key = f"{prefix}:c:{b.key}"
                pipe.evalsha(slots_sha, 1, key, self.me, args[0], b.limit, wall_ms, ttl_ms,
                             args[1])  # fmt: skip
            else:
                key = f"{prefix}:w:{b.key}:{b.window}"
                pipe.evalsha(window_sha, 1, key, args[0], args[1], b.limit, WINDOW_S * 2)
        self.ops += len(due)
        return list(await pipe.execute())
