"""Per-tenant quotas on the hot path: requests and tokens per minute, concurrent requests.

Each limit of each scope (a tenant, or a tenant and one model) is a :class:`Bucket` this
worker holds. The hot path only touches local numbers and never waits:

* **Embedded (no store)**: every worker enforces its share of each limit,
  ``ceil(limit / deciders)`` (deciders: this router's workers and its peers), like the
  in-flight quotas of admission; together they admit at most ``limit + deciders - 1``.
* **Shared (Redis)**: a worker *leases* units from the store in the background
  (:mod:`extproc.control.gateway.store`) and admits from its lease. When the lease runs
  low the syncer is woken; while a refill is on its way a worker may run ahead of its
  lease by at most one lease (``lease`` units: the *overdraft*), and only while the
  store last said the window had room. Units used beyond the lease are claimed at the
  next sync, so the store's count stays exact and the overshoot of a window is at most
  ``deciders x lease`` (plus tokens that a response's real usage adds over its
  reservation). When the store is unreachable, ``fail_open`` falls back to the embedded
  shares and ``fail_open=False`` answers 503 ``quota_unavailable``.

Windows are fixed one-minute windows of wall-clock time (``floor(time / 60)``), the same
on every replica. Tokens are reserved at admission (prompt estimate + completion limit)
and reconciled by :meth:`QuotaBook.finish` when the real usage is known.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from extproc.core.errors import QuotaExceeded, QuotaUnavailable, RateLimitState

WINDOW_S = 60
REQUESTS, TOKENS, CONCURRENT = "requests_per_minute", "tokens_per_minute", "concurrent_requests"
KINDS = (REQUESTS, TOKENS, CONCURRENT)
HEADER_KIND = {REQUESTS: "requests", TOKENS: "tokens"}
ALL_MODELS = "*"
OTHER_TENANTS = "*"


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None

    def items(self) -> Iterator[tuple[str, int]]:
        for kind in KINDS:
            value = getattr(self, kind)
            if value is not None:
                yield kind, value


@dataclass(frozen=True, slots=True)
class TenantQuotas:
    """A tenant's limits: across its models, and per model."""

    tenant: Limits = field(default_factory=Limits)
    models: Mapping[str, Limits] = field(default_factory=dict)

    def scopes(self, model: str) -> Iterator[tuple[str, Limits]]:
        yield ALL_MODELS, self.tenant
        per_model = self.models.get(model)
        if per_model is not None:
            yield model, per_model


class Bucket:
    """One limit of one scope as this worker holds it."""

    __slots__ = ("counts_tokens", "granted", "key", "kind", "lease", "limit", "share", "total",
                 "used", "window", "windowed")  # fmt: skip

    def __init__(self, key: str, kind: str, limit: int, share: int, lease: int) -> None:
        self.key = key
        """``<tenant>|<model or *>|<kind>``: the store's key (tenant names are config's)."""
        self.kind = kind
        self.windowed = kind != CONCURRENT
        self.counts_tokens = kind == TOKENS
        self.limit = limit
        self.share = share
        """This worker's share of the limit (embedded mode, and a store outage)."""
        self.lease = lease
        """Units leased at a time from the store; also the most a worker runs ahead."""
        self.window = -1
        self.used = 0
        """Units used in the window (requests, tokens), or requests in flight."""
        self.granted = 0
        """Units this worker may use: its lease (shared) or its share (embedded)."""
        self.total: int | None = None
        """The store's count when last synced (every worker's grants and claims)."""

    def __repr__(self) -> str:
        return (
            f"Bucket({self.key!r}, used={self.used}, granted={self.granted}/{self.limit}, "
            f"total={self.total}, window={self.window})"
        )

    @property
    def claim(self) -> int:
        """Units used beyond the grant (the store must count them)."""
        return max(0, self.used - self.granted)

    def remaining(self) -> int:
        if self.total is None:
            return max(0, min(self.limit, self.share) - self.used)
        return max(0, self.limit - self.total - self.claim)


_Ticket = tuple[tuple[Bucket, ...], int, int, float]
"""A request holding quota: its concurrency and token buckets, the window it was
admitted in, the tokens reserved and when (plain tuple: built on every request)."""


class QuotaBook:
    """This worker's buckets, the requests holding quota, and the store's health."""

    def __init__(
        self,
        *,
        deciders: int = 1,
        shared: bool = False,
        fail_open: bool = True,
        lease_fraction: float = 0.05,
        clock: Callable[[], float] = time.time,
        max_open: int = 200_000,
        timeout_s: float = 900.0,
    ) -> None:
        self.deciders = deciders
        self.shared = shared
        self.fail_open = fail_open
        self.lease_fraction = lease_fraction
        self.clock = clock
        self.max_open = max_open
        self.timeout_s = timeout_s
        self.policies: Mapping[str, TenantQuotas] = {}
        self.buckets: dict[str, Bucket] = {}
        self.store_ok = True
        """Set by the syncer: the store answered its last round."""
        self.notify: Callable[[], None] = lambda: None
        """Called when a lease runs low (the syncer's wake-up)."""
        self.overdrafts = 0
        self.expired = 0
        self._open: dict[str, _Ticket] = {}
        """Requests holding quota, oldest first."""
        self._plans: dict[tuple[str, str], tuple[Bucket, ...]] = {}
        """The buckets of each (tenant, model) seen, worked out once per configuration."""

    def __repr__(self) -> str:
        return (
            f"QuotaBook(shared={self.shared}, store_ok={self.store_ok}, "
            f"buckets={len(self.buckets)}, open={len(self._open)}, deciders={self.deciders})"
        )

    def configure(self, policies: Mapping[str, TenantQuotas], deciders: int) -> None:
        """New limits (a reload): buckets whose limit changed take it at once."""
        self.policies = policies
        self.deciders = deciders
        self._plans = {}
        for b in self.buckets.values():
            tenant, model, kind = b.key.split("|")
            limit = self._limit(tenant, model, kind)
            if limit is not None and limit != b.limit:
                b.limit, b.share, b.lease = limit, self._share(limit), self._lease(limit)

    def _quotas(self, tenant: str) -> TenantQuotas | None:
        """The tenant's quotas; undeclared tenants (JWT claims) take the ``*`` entry's,
        each counted on its own."""
        found = self.policies.get(tenant)
        return found if found is not None else self.policies.get(OTHER_TENANTS)

    def _limit(self, tenant: str, model: str, kind: str) -> int | None:
        quotas = self._quotas(tenant)
        if quotas is None:
            return None
        limits = quotas.tenant if model == ALL_MODELS else quotas.models.get(model)
        return None if limits is None else getattr(limits, kind)

    def _share(self, limit: int) -> int:
        return max(1, math.ceil(limit / self.deciders))

    def _lease(self, limit: int) -> int:
        return max(1, math.ceil(limit * self.lease_fraction))

    def _bucket(self, tenant: str, scope: str, kind: str, limit: int) -> Bucket:
        key = f"{tenant}|{scope}|{kind}"
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = Bucket(key, kind, limit, self._share(limit), self._lease(limit))
            if kind == CONCURRENT and not self.shared:
                b.granted = b.share
        return b

    def _roll(self, b: Bucket, window: int) -> None:
        if b.kind != CONCURRENT and b.window != window:
            b.window = window
            b.used = 0
            b.total = None
            b.granted = 0 if self.shared else b.share

    def _fits(self, b: Bucket, n: int) -> bool:
        if self.shared and not self.store_ok:
            if not self.fail_open:  # closed: not even from a lease (Redis may have lost it)
                raise QuotaUnavailable("the shared quota store is unreachable; retry shortly")
            return b.used + n <= max(b.granted, b.share)
        if b.used + n <= b.granted:
            return True
        if not self.shared:
            return False
        over = b.used + n - b.granted
        known = b.total if b.total is not None else 0
        return over <= b.lease and known + over <= b.limit

    def _plan(self, tenant: str, model: str) -> tuple[Bucket, ...]:
        quotas = self._quotas(tenant)
        plan: tuple[Bucket, ...] = ()
        if quotas is not None:
            plan = tuple(
                self._bucket(tenant, scope, kind, limit)
                for scope, limits in quotas.scopes(model)
                for kind, limit in limits.items()
            )
        if len(self._plans) >= 10_000:  # models named by clients: bounded
            self._plans.clear()
        self._plans[(tenant, model)] = plan
        return plan

    def admit(self, tenant: str, model: str, tokens: int, request_id: str) -> None:
        """Count one request of ``tenant`` for ``model`` (``tokens`` reserved), or raise
        :class:`QuotaExceeded` (429) naming the limit; nothing is counted then."""
        plan = self._plans.get((tenant, model))
        if plan is None:
            plan = self._plan(tenant, model)
        if not plan:
            return
        now = self.clock()
        window = int(now // WINDOW_S)
        slow = self.shared and not self.store_ok
        for b in plan:  # check every limit first: a refusal counts nothing
            if b.windowed and b.window != window:
                self._roll(b, window)
            n = tokens if b.counts_tokens else 1
            if (slow or b.used + n > b.granted) and n and not self._fits(b, n):
                raise self._exceeded(b, n, plan, tokens, now)
        low = False
        held: list[Bucket] = []
        for b in plan:
            n = tokens if b.counts_tokens else 1
            if not n:
                continue
            if b.used + n > b.granted:
                self.overdrafts += 1
            b.used += n
            if self.shared and b.granted - b.used < b.lease / 2:
                low = True
            if b.kind != REQUESTS:
                held.append(b)
        if low:
            self.notify()
        if held:
            self._hold(request_id, (tuple(held), window, tokens, now))

    def _hold(self, request_id: str, ticket: _Ticket) -> None:
        previous = self._open.pop(request_id, None)
        if previous is not None:  # the same request id twice: the first one is over
            self._settle(previous, None)
        self._open[request_id] = ticket
        if len(self._open) > self.max_open:
            oldest = next(iter(self._open))
            self._settle(self._open.pop(oldest), None)
            self.expired += 1

    def _exceeded(
        self, b: Bucket, n: int, plan: tuple[Bucket, ...], tokens: int, now: float
    ) -> QuotaExceeded:
        reset = WINDOW_S - now % WINDOW_S
        states = []
        for kind, header in HEADER_KIND.items():
            of_kind = [x for x in plan if x.kind == kind and (tokens or kind != TOKENS)]
            if of_kind:
                tight = min(of_kind, key=Bucket.remaining)
                states.append(RateLimitState(header, tight.limit, tight.remaining(), reset))
        tenant, scope, _ = b.key.split("|")
        where = f"tenant {tenant!r}" + ("" if scope == ALL_MODELS else f", model {scope!r}")
        if b.kind == CONCURRENT:
            why = f"{where} has {b.limit} concurrent requests"
            return QuotaExceeded(why + " in flight", retry_after_s=1, limits=tuple(states),
                                 quota=b.kind)  # fmt: skip
        unit = "requests" if b.kind == REQUESTS else "tokens"
        if n > b.limit:
            why = f"this request needs {n} {unit}, more than {where}'s {b.limit} per minute"
        else:
            why = f"{where} is over its {b.limit} {unit} per minute"
        return QuotaExceeded(
            why, retry_after_s=max(1, math.ceil(reset)), limits=tuple(states), quota=b.kind
        )

    def finish(self, request_id: str, tokens: int | None = None) -> bool:
        """The request ended (Envoy's access log): its concurrency slots return, and its
        token reservation is replaced by ``tokens`` (the real usage) when known."""
        ticket = self._open.pop(request_id, None)
        if ticket is None:
            return False
        self._settle(ticket, tokens)
        return True

    def _settle(self, ticket: _Ticket, tokens: int | None) -> None:
        held, window, reserved, _ = ticket
        for b in held:
            if b.kind == CONCURRENT:
                if b.used > 0:
                    b.used -= 1
                # Shared: hand back slots once this worker holds two leases too many.
                if self.shared and b.granted > b.used + 2 * b.lease:
                    self.notify()
            elif tokens is not None and b.window == window:
                b.used = max(0, b.used + tokens - reserved)

    def expire(self) -> int:
        """Release requests whose access-log entry never came (after ``timeout_s``)."""
        limit = self.clock() - self.timeout_s
        n = 0
        while self._open:
            request_id = next(iter(self._open))
            if self._open[request_id][3] > limit:
                break
            self.finish(request_id)
            n += 1
        self.expired += n
        return n

    @property
    def open(self) -> int:
        return len(self._open)
