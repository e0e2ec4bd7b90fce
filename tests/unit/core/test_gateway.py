"""The gateway on the hot path, without sockets: API keys by digest, JWT claims, model
rights, and the quota book (local shares, Redis leases and their overshoot bound, store
outages, reconciliation with the real usage) and the 401/403/429 headers."""

from __future__ import annotations

import pytest

from extproc.core.envoy_wire import error_headers, reset_text
from extproc.core.errors import ModelNotAllowed, QuotaExceeded, QuotaUnavailable, Unauthenticated
from extproc.core.gateway.credentials import (
    OTHER_LABEL,
    ApiKey,
    Authenticator,
    TenantPolicy,
    key_digest,
)
from extproc.core.gateway.quota import Limits, QuotaBook, TenantQuotas

KEY, NARROW = "mr-secret-acme", "mr-secret-narrow"


def _auth(other: bool = False) -> Authenticator:
    tenants = {"acme": TenantPolicy("acme", "acme", frozenset({"chat", "embed"}), "standard")}
    if other:
        tenants["*"] = TenantPolicy("*", OTHER_LABEL, None, "sheddable")
    keys = {
        key_digest(KEY): ApiKey(key_digest(KEY), "ci", "acme"),
        key_digest(NARROW): ApiKey(
            key_digest(NARROW), "narrow", "acme", frozenset({"embed", "other"}), "critical"
        ),
    }
    return Authenticator(keys, tenants, tenant_claim="org" if other else None)


class Clock:
    def __init__(self, t: float = 6000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_api_key_in_either_header_names_tenant_and_narrows_models() -> None:
    auth = _auth()
    for headers in ({"authorization": f"Bearer {KEY}"}, {"x-api-key": KEY},
                    {"authorization": f"bearer  {KEY} "}):  # fmt: skip
        caller = auth.authenticate(headers)
        assert (caller.tenant, caller.label, caller.default_class) == ("acme", "acme", "standard")
        assert caller.credential == "API key 'ci'"
        caller.check_model("chat")
    narrow = auth.authenticate({"x-api-key": NARROW})
    assert narrow.models == frozenset({"embed"}) and narrow.default_class == "critical"
    with pytest.raises(ModelNotAllowed, match="may not use model 'chat'") as exc:
        narrow.check_model("chat")
    assert exc.value.status == 403 and KEY not in exc.value.message


@pytest.mark.parametrize(
    ("headers", "sent"),
    [
        ({}, False),
        ({"authorization": "Bearer nope"}, True),
        ({"x-api-key": "nope"}, True),
        ({"authorization": "Basic dXNlcjpwYXNz"}, True),
        ({"authorization": "Bearer "}, True),
    ],
)
def test_missing_or_bad_credentials_are_401_with_a_challenge(
    headers: dict[str, str], sent: bool
) -> None:
    with pytest.raises(Unauthenticated) as exc:
        _auth().authenticate(headers)
    err = exc.value
    assert err.status == 401
    assert err.challenge.startswith('Bearer realm="model-router"')
    assert ('error="invalid_token"' in err.challenge) == sent
    assert ("www-authenticate", err.challenge) in error_headers(err)
    assert "nope" not in err.message and "dXNlcjpwYXNz" not in err.message


def test_jwt_claim_names_the_tenant_undeclared_ones_share_the_star_entry() -> None:
    auth = _auth(other=True)
    caller = auth.authenticate({}, {"org": "acme"})
    assert (caller.tenant, caller.credential, caller.label) == ("acme", "JWT", "acme")
    stranger = auth.authenticate({}, {"org": "initech"})
    assert (stranger.tenant, stranger.label, stranger.default_class) == (
        "initech", OTHER_LABEL, "sheddable")  # fmt: skip
    with pytest.raises(Unauthenticated, match="'org' claim"):
        auth.authenticate({}, {"sub": "x"})
    strict = Authenticator({}, {"acme": TenantPolicy("acme", "acme")}, tenant_claim="org")
    with pytest.raises(ModelNotAllowed, match="tenant 'initech' is not allowed"):
        strict.authenticate({}, {"org": "initech"})


def test_local_quota_is_each_workers_share_and_429_carries_openai_headers() -> None:
    clock = Clock()
    book = QuotaBook(clock=clock)
    book.configure({"acme": TenantQuotas(Limits(requests_per_minute=5, tokens_per_minute=100))}, 2)
    for i in range(3):  # ceil(5 / 2) = 3 per worker
        book.admit("acme", "chat", 10, f"r{i}")
    with pytest.raises(QuotaExceeded) as exc:
        book.admit("acme", "chat", 10, "r3")
    err = exc.value
    assert (err.status, err.quota, err.retry_after_s) == (429, "requests_per_minute", 60)
    headers = dict(error_headers(err))
    assert headers["x-ratelimit-limit-requests"] == "5"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "1m0s"
    assert headers["x-ratelimit-limit-tokens"] == "100"
    assert headers["x-ratelimit-remaining-tokens"] == "20"  # share 50, 30 used
    assert headers["retry-after"] == "60"
    clock.t += 60  # the next window
    book.admit("acme", "chat", 10, "r4")


def test_tokens_reserved_then_reconciled_with_the_real_usage() -> None:
    book = QuotaBook(clock=Clock())
    book.configure({"acme": TenantQuotas(Limits(tokens_per_minute=1000))}, 1)
    book.admit("acme", "chat", 600, "a")  # prompt estimate + max_tokens
    with pytest.raises(QuotaExceeded, match="over its 1000 tokens") as exc:
        book.admit("acme", "chat", 600, "b")
    assert exc.value.quota == "tokens_per_minute"
    assert book.finish("a", 120)  # the response's usage
    book.admit("acme", "chat", 600, "b")
    assert book.buckets["acme|*|tokens_per_minute"].used == 720
    with pytest.raises(QuotaExceeded, match="needs 2000 tokens, more than"):
        book.admit("acme", "chat", 2000, "c")


def test_concurrency_slots_return_when_the_request_ends_or_times_out() -> None:
    clock = Clock()
    book = QuotaBook(clock=clock, timeout_s=30)
    book.configure({"acme": TenantQuotas(models={"chat": Limits(concurrent_requests=2)})}, 1)
    book.admit("acme", "embed", 0, "other-model")  # no limit for embed
    book.admit("acme", "chat", 0, "a")
    book.admit("acme", "chat", 0, "b")
    with pytest.raises(QuotaExceeded, match="model 'chat' has 2 concurrent") as exc:
        book.admit("acme", "chat", 0, "c")
    assert exc.value.retry_after_s == 1
    book.finish("a")
    book.admit("acme", "chat", 0, "c")
    clock.t += 31
    assert book.expire() == 2 and book.open == 0
    book.admit("acme", "chat", 0, "d")


def test_unlisted_tenants_have_no_quota_unless_a_star_entry_gives_them_one() -> None:
    book = QuotaBook(clock=Clock())
    book.configure({"acme": TenantQuotas(Limits(requests_per_minute=1))}, 1)
    for i in range(5):
        book.admit("initech", "chat", 0, str(i))
    book.configure({"*": TenantQuotas(Limits(requests_per_minute=1))}, 1)
    book.admit("initech", "chat", 0, "x")
    book.admit("globex", "chat", 0, "y")  # counted on its own
    with pytest.raises(QuotaExceeded):
        book.admit("initech", "chat", 0, "z")


def test_shared_book_runs_ahead_of_its_lease_by_at_most_one_lease() -> None:
    wakes: list[int] = []
    book = QuotaBook(shared=True, lease_fraction=0.1, clock=Clock())
    book.notify = lambda: wakes.append(1)
    book.configure({"acme": TenantQuotas(Limits(requests_per_minute=100))}, 4)
    admitted = 0
    with pytest.raises(QuotaExceeded):
        for i in range(100):
            book.admit("acme", "chat", 0, str(i))
            admitted += 1
    b = book.buckets["acme|*|requests_per_minute"]
    assert admitted == b.lease == 10  # no grant yet: one lease of overdraft
    assert b.claim == 10 and book.overdrafts == 10 and wakes
    # The syncer claimed those 10 and was granted 10 more; the other workers took the
    # rest of the window: the store is full, so no overdraft beyond the grant.
    b.granted, b.total = 20, 100
    for i in range(10):
        book.admit("acme", "chat", 0, f"g{i}")
    with pytest.raises(QuotaExceeded) as exc:
        book.admit("acme", "chat", 0, "over")
    assert dict(error_headers(exc.value))["x-ratelimit-remaining-requests"] == "0"


def test_store_down_fails_open_to_shares_or_closed_to_503() -> None:
    limits = {"acme": TenantQuotas(Limits(requests_per_minute=10))}
    opened = QuotaBook(shared=True, fail_open=True, clock=Clock())
    opened.configure(limits, 2)
    opened.store_ok = False
    for i in range(5):  # ceil(10 / 2)
        opened.admit("acme", "chat", 0, str(i))
    with pytest.raises(QuotaExceeded):
        opened.admit("acme", "chat", 0, "x")
    closed = QuotaBook(shared=True, fail_open=False, clock=Clock())
    closed.configure(limits, 2)
    closed.store_ok = False
    with pytest.raises(QuotaUnavailable) as exc:
        closed.admit("acme", "chat", 0, "x")
    assert exc.value.status == 503 and exc.value.retry_after_s == 1
    closed.admit("other", "chat", 0, "y")  # no quota: never asks the store


def test_reset_text_is_openais_format() -> None:
    assert [reset_text(s) for s in (0.25, 1, 17.4, 60, 61)] == ["250ms", "1s", "17s", "1m0s",
                                                                  "1m1s"]  # fmt: skip
