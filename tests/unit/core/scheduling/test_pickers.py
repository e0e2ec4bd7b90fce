from __future__ import annotations

from collections import Counter

from extproc.core.scheduling.framework import Candidate, SeedParams
from extproc.core.scheduling.pickers.max_score import MaxScore
from extproc.core.scheduling.pickers.round_robin import RoundRobin
from extproc.core.scheduling.pickers.weighted_random import WeightedRandom
from extproc.core.scheduling.plugins import PLUGINS, by_kind
from extproc.core.snapshot import Deployment, Endpoint


def _cands(*spec: tuple[str, str, int]) -> list[Candidate]:
    out = []
    for address, dep, weight in spec:
        ep = Endpoint(address, dep, weight)
        out.append(Candidate(ep, Deployment(dep, "m", "1", (ep,), weight=weight)))
    return out


EPS = _cands(("10.0.0.1:1", "a", 1), ("10.0.0.2:1", "b", 3), ("10.0.0.3:1", "c", 0))


def test_plugins_registered_by_kind_and_unique_name() -> None:
    assert set(by_kind("picker")) == {"round_robin", "weighted_random", "max_score",
                                      "power_of_two"}  # fmt: skip
    assert set(by_kind("filter")) == {"routable", "version", "capabilities", "subset",
                                      "not_ejected", "not_saturated"}  # fmt: skip
    assert set(by_kind("scorer")) == {
        "deployment_weight", "least_inflight", "least_busy_time", "queue", "kv_cache", "latency",
        "prefix_cache", "lora_affinity", "cost",
    }  # fmt: skip
    assert len({(p.kind, p.name) for p in PLUGINS}) == len(PLUGINS)


def test_round_robin_rotates_and_orders_fallbacks() -> None:
    rr = RoundRobin()
    picks = [rr.pick("k", EPS[:2], None, 2) for _ in range(4)]
    assert [p[0].address for p in picks] == ["10.0.0.1:1", "10.0.0.2:1"] * 2
    assert all(len({e.address for e in p}) == 2 for p in picks)
    assert rr.pick("other", EPS[:2], None, 5)[0].address == "10.0.0.1:1"  # pools independent
    assert rr.pick("k", [], None, 3) == []
    assert "pools=2" in repr(rr)


def test_weighted_random_follows_weights_and_skips_zero() -> None:
    wr = WeightedRandom(SeedParams(seed=7))
    counts = Counter(wr.pick("k", EPS, None, 1)[0].deployment.name for _ in range(4000))
    assert counts["c"] == 0
    assert 2.6 < counts["b"] / counts["a"] < 3.4
    fallbacks = wr.pick("k", EPS, None, 3)
    assert len(fallbacks) == 2 and len({e.address for e in fallbacks}) == 2


def test_weighted_random_seed_is_reproducible() -> None:
    a = WeightedRandom(SeedParams(seed=3))
    b = WeightedRandom(SeedParams(seed=3))
    assert [a.pick("k", EPS, None, 2) for _ in range(20)] == [
        b.pick("k", EPS, None, 2) for _ in range(20)
    ]


def test_max_score_orders_by_score_and_breaks_ties_at_random() -> None:
    ms = MaxScore(SeedParams(seed=1))
    assert [c.address for c in ms.pick("k", EPS, [0.2, 0.9, 0.5], 3)] == [
        "10.0.0.2:1",
        "10.0.0.3:1",
        "10.0.0.1:1",
    ]
    firsts = Counter(ms.pick("k", EPS, [1.0, 1.0, 0.0], 1)[0].address for _ in range(400))
    assert set(firsts) == {"10.0.0.1:1", "10.0.0.2:1"}  # both tied leaders get picked
    assert len(ms.pick("k", EPS, None, 2)) == 2  # no scorers: uniform random


def test_round_robin_pool_state_is_bounded() -> None:
    # Client-chosen capability requirements make a key per distinct header value.
    rr = RoundRobin()
    rr.max_pools = 8
    for i in range(20):
        rr.pick(("m", None, i), EPS[:2], None, 1)
    assert len(rr._next) <= 8
    # a known pool keeps rotating while the table is full
    rr2 = RoundRobin()
    rr2.max_pools = 2
    rr2.pick("a", EPS[:2], None, 1)
    rr2.pick("b", EPS[:2], None, 1)
    assert rr2.pick("a", EPS[:2], None, 1)[0].address == "10.0.0.2:1"
