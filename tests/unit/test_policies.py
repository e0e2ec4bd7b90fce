from __future__ import annotations

import random
from collections import Counter

import pytest

from extproc.policies import PICKERS, make_picker
from extproc.policies.round_robin import RoundRobin
from extproc.policies.weighted_random import WeightedRandom
from extproc.registry.base import Endpoint

EPS = [
    Endpoint("10.0.0.1:1", "a", 1),
    Endpoint("10.0.0.2:1", "b", 3),
    Endpoint("10.0.0.3:1", "c", 0),
]


def test_registry_by_name() -> None:
    assert set(PICKERS) == {"round_robin", "weighted_random"}
    assert isinstance(make_picker("round_robin"), RoundRobin)
    with pytest.raises(ValueError, match="unknown picker"):
        make_picker("nope")


def test_round_robin_rotates_and_orders_fallbacks() -> None:
    rr = RoundRobin()
    picks = [rr.pick("k", EPS[:2], 2) for _ in range(4)]
    assert [p[0].address for p in picks] == ["10.0.0.1:1", "10.0.0.2:1"] * 2
    assert all(len({e.address for e in p}) == 2 for p in picks)
    assert rr.pick("other", EPS[:2], 5)[0].address == "10.0.0.1:1"  # pools are independent
    assert rr.pick("k", [], 3) == []
    assert "pools=2" in repr(rr)


def test_weighted_random_follows_weights_and_skips_zero() -> None:
    wr = WeightedRandom(random.Random(7))
    counts = Counter(wr.pick("k", EPS, 1)[0].deployment for _ in range(4000))
    assert counts["c"] == 0
    assert 2.6 < counts["b"] / counts["a"] < 3.4
    fallbacks = wr.pick("k", EPS, 3)
    assert len(fallbacks) == 2 and len({e.address for e in fallbacks}) == 2


def test_round_robin_pool_state_is_bounded() -> None:
    # Client-chosen capability requirements make a key per distinct header value.
    rr = RoundRobin()
    rr.max_pools = 8
    for i in range(20):
        rr.pick(("m", None, i), EPS[:2], 1)
    assert len(rr._next) <= 8
    # a known pool keeps rotating while the table is full
    rr2 = RoundRobin()
    rr2.max_pools = 2
    rr2.pick("a", EPS[:2], 1)
    rr2.pick("b", EPS[:2], 1)
    assert rr2.pick("a", EPS[:2], 1)[0].address == "10.0.0.2:1"
