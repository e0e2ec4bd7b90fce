"""Admission on the hot path, without sockets: quotas, priority classes and shedding,
latency budgets, cost, the 400s for bad headers and what ``explain``'s trace shows."""

from __future__ import annotations

import time

import orjson
import pytest

from extproc.core.errors import BudgetUnmet, InvalidRequest, Overloaded
from extproc.core.flow import RouterState
from extproc.core.protocols import understand_head
from extproc.core.request import InferenceRequest, RequestHead
from extproc.core.scheduling.profile import ScheduleTrace
from extproc.core.signals import EndpointLatency, EndpointLoad, LoadSnapshot, SignalBoard
from tests.unit.helpers import run_flow, state_for

A, B = "127.0.0.1:8001", "127.0.0.1:8002"

FLEET = """
scheduling: {profile: load-aware}
models:
  m: {protocol: generic, versions: ["1"]}
deployments:
  - {name: a, model: m, version: "1", endpoints: ["127.0.0.1:8001"]}
  - {name: b, model: m, version: "1", endpoints: ["127.0.0.1:8002"]}
"""


def _req(headers: dict[str, str] | None = None) -> InferenceRequest:
    r = understand_head(RequestHead("POST", "/api", {"x-model": "m", **(headers or {})}))
    assert isinstance(r, InferenceRequest)
    return r


def _board(
    loads: dict[str, tuple[float, float]] | None = None,
    ttfb: dict[str, float] | None = None,
) -> SignalBoard:
    board = SignalBoard()
    now = time.monotonic()
    board.load = LoadSnapshot(
        {a: EndpointLoad(waiting=w, running=4, kv_usage=kv, at=now) for a, (w, kv) in
         (loads or {}).items()}
    )  # fmt: skip
    board.latency = {a: EndpointLatency(ttfb_s=s, duration_s=s * 2, samples=10)
                     for a, s in (ttfb or {}).items()}  # fmt: skip
    return board


def _schedule(state: RouterState, board: SignalBoard, headers: dict[str, str] | None = None,
              trace: ScheduleTrace | None = None):  # type: ignore[no-untyped-def]  # fmt: skip
    adm = state.scheduler.admission
    assert adm is not None and state.snapshot is not None
    head = RequestHead("POST", "/api", {"x-model": "m", **(headers or {})})
    return state.scheduler.schedule(
        _req(headers), state.snapshot, None, trace, board, adm.classify(head),
        adm.header_budget(head),
    )  # fmt: skip


# -- priority classes and shedding ------------------------------------------------------


def test_classes_shed_in_order_as_load_rises() -> None:
    state = state_for(FLEET)
    # queue_saturation 5: load 1.2 on the least loaded endpoint
    board = _board({A: (6, 0.1), B: (8, 0.1)})
    with pytest.raises(Overloaded) as exc:
        _schedule(state, board, {"x-model-router-priority": "sheddable"})
    assert exc.value.status == 429 and exc.value.retry_after_s == 1
    assert exc.value.reason == "load" and "sheddable" in exc.value.message
    # standard keeps its headroom up to 1.5; critical is never shed
    assert _schedule(state, board).endpoints[0] == A
    assert _schedule(state, board, {"x-model-router-priority": "critical"}).priority == "critical"
    board = _board({A: (9, 0.1), B: (8, 0.1)})  # least 1.6
    with pytest.raises(Overloaded):
        _schedule(state, board, {"x-model-router-priority": "standard"})
    for _ in range(5):  # critical goes to the least loaded endpoint, whatever scorers say
        assert _schedule(state, board, {"x-model-router-priority": "critical"}).endpoints[0] == B


def test_kv_cache_counts_as_load_and_stale_scrapes_do_not() -> None:
    state = state_for(FLEET)
    with pytest.raises(Overloaded):  # kv 0.85 / 0.8 > 1.0
        _schedule(state, _board({A: (0, 0.85), B: (0, 0.9)}), {"x-model-router-priority":
                                                                 "sheddable"})  # fmt: skip
    board = _board()
    old = time.monotonic() - 60
    board.load = LoadSnapshot({A: EndpointLoad(waiting=50, at=old), B: EndpointLoad(waiting=50,
                                                                                      at=old)})  # fmt: skip
    # stale load is unknown, not full: admission never sheds on data it does not have
    assert _schedule(state, board, {"x-model-router-priority": "sheddable"}).model == "m"


def test_unknown_class_and_bad_budget_are_400s_naming_the_header() -> None:
    state = state_for(FLEET)
    for headers, name in (
        ({"x-model-router-priority": "urgent"}, "x-model-router-priority"),
        ({"x-model-router-priority": "x" * 5000}, "x-model-router-priority"),
        ({"x-model-router-ttft-budget-ms": "fast"}, "x-model-router-ttft-budget-ms"),
        ({"x-model-router-ttft-budget-ms": "-5"}, "x-model-router-ttft-budget-ms"),
        ({"x-model-router-ttft-budget-ms": "nan"}, "x-model-router-ttft-budget-ms"),
        ({"x-model-router-ttft-budget-ms": "inf"}, "x-model-router-ttft-budget-ms"),
    ):
        flow, out = run_flow(state, "POST", "/api", [("x-model", "m"), *headers.items()])
        err = flow.outcome.error
        assert isinstance(err, InvalidRequest) and err.header == name, headers
        assert out[-1] is not None and out[-1].immediate_response.status.code == 400
        body = orjson.loads(out[-1].immediate_response.body)
        assert name in body["error"]["message"] and len(body["error"]["message"]) < 300


# -- quotas -----------------------------------------------------------------------------

QUOTA = """
scheduling: {profile: least-inflight}
listener: {workers: 2}
models:
  m: {protocol: generic, versions: ["1"]}
deployments:
  - {name: small, model: m, version: "1", endpoints: ["127.0.0.1:8001"], max_inflight: 3}
  - {name: big, model: m, version: "1", endpoints: ["127.0.0.1:8002", "127.0.0.1:8003"],
     max_inflight_per_endpoint: 1}
"""


def test_quota_share_per_worker_and_full_deployments_filtered() -> None:
    state = state_for(QUOTA)
    adm = state.scheduler.admission
    assert adm is not None and adm.deciders == 2 and adm.share(3) == 2 and adm.share(1) == 1
    board = SignalBoard()
    picked = []
    for i in range(4):  # small holds 2 (its share of 3), each big endpoint 1
        d = _schedule(state, board)
        board.inflight.acquire(d.endpoints[0], f"r{i}")
        picked.append(d.endpoints[0])
    assert sorted(picked) == sorted([A, A, B, "127.0.0.1:8003"])
    with pytest.raises(Overloaded) as exc:
        _schedule(state, board)
    assert exc.value.reason == "quota" and "at its quota" in exc.value.message
    # critical goes on over quota, to the least loaded
    assert _schedule(state, board, {"x-model-router-priority": "critical"}).endpoints[0] in (
        B, "127.0.0.1:8003")  # fmt: skip
    board.inflight.release("r0")
    assert _schedule(state, board).endpoints[0] == picked[0]


# -- budgets ----------------------------------------------------------------------------


def test_budget_filters_slow_endpoints_and_the_policy_decides_a_miss() -> None:
    state = state_for(FLEET)
    board = _board(ttfb={A: 0.05, B: 0.6})
    for _ in range(5):  # header budget 200 ms: only A is predicted to make it
        assert _schedule(state, board, {"x-model-router-ttft-budget-ms": "200"}).endpoints[0] == A
    board = _board(ttfb={A: 0.5, B: 0.6})
    d = _schedule(state, board, {"x-model-router-ttft-budget-ms": "100"})
    assert d.budget_at_risk and d.endpoints[0] == A  # route_best: the best, flagged
    for policy, error in (("reject_429", Overloaded), ("reject_503", BudgetUnmet)):
        s = state_for(f"admission: {{on_budget_miss: {policy}}}\n" + FLEET)
        with pytest.raises(error) as exc:
            _schedule(s, board, {"x-model-router-ttft-budget-ms": "100"})
        assert exc.value.reason == "budget" and "100 ms" in exc.value.message


def test_model_objective_is_the_default_budget_and_queue_counts() -> None:
    text = FLEET.replace('versions: ["1"]}', 'versions: ["1"], objective: {ttft_ms: 300}}')
    state = state_for(text)
    # same observed TTFB, but B has a queue: 4 waiting x 0.2 s / 4 running = +200 ms
    board = _board({A: (0, 0.1), B: (4, 0.1)}, ttfb={A: 0.15, B: 0.1})
    trace = ScheduleTrace()
    d = _schedule(state, board, trace=trace)
    assert d.endpoints[0] == A and not d.budget_at_risk
    sig = trace.as_dict()["signals"]
    assert sig[A]["predicted_ttft_ms"] == 150.0 and sig[B]["predicted_ttft_ms"] == 300.0
    budget = [f for f in trace.filters if f["filter"] == "admission.budget"]
    assert budget == [{"filter": "admission.budget", "applied": True, "kept": [A],
                       "budget_ms": 300.0, "at_risk": False}]  # fmt: skip


# -- cost -------------------------------------------------------------------------------

COSTED = """
scheduling: {profile: cost-aware}
models:
  m: {protocol: openai, versions: ["1"], native: false}
deployments:
  - {name: cheap, model: m, version: "1", endpoints: ["127.0.0.1:8001"], max_inflight: 2,
     cost: {per_1k_prompt_tokens: 0.1, per_1k_completion_tokens: 0.2}}
  - {name: dear, model: m, version: "1", endpoints: ["127.0.0.1:8002"],
     cost: {per_request: 0.01, per_1k_prompt_tokens: 1.0, per_1k_completion_tokens: 2.0}}
"""


def test_cost_aware_prefers_the_cheap_deployment_until_its_quota_is_full() -> None:
    state = state_for(COSTED)
    body = orjson.dumps({"model": "m", "max_tokens": 500,
                         "messages": [{"role": "user", "content": "x" * 3996}]})  # fmt: skip
    headers = [("content-type", "application/json")]
    flows = []
    for _ in range(3):
        flow, _out = run_flow(state, "POST", "/v1/chat/completions",
                              [*headers, ("x-request-id", f"r{len(flows)}")], body)  # fmt: skip
        flows.append(flow.outcome.decision)
    assert [d.deployment for d in flows if d] == ["cheap", "cheap", "dear"]
    cheap, dear = flows[0], flows[2]
    assert cheap is not None and dear is not None
    # prompt: ("user" + separator + 3996 chars) / 4 = 1001 tokens; completion: max_tokens
    assert cheap.cost == pytest.approx(1001 / 1000 * 0.1 + 500 / 1000 * 0.2)
    assert dear.cost == pytest.approx(0.01 + 1001 / 1000 * 1.0 + 500 / 1000 * 2.0)


def test_explain_shows_cost_and_quota_use() -> None:
    state = state_for(COSTED)
    trace = ScheduleTrace()
    adm = state.scheduler.admission
    assert adm is not None and state.snapshot is not None
    head = RequestHead("POST", "/v1/chat/completions", {})
    request = InferenceRequest("openai", "m", None, head, {"model": "m", "prompt": "hi"})
    state.scheduler.schedule(request, state.snapshot, None, trace, SignalBoard())
    out = trace.as_dict()
    assert out["signals"][A]["quota_use"] == 0.0
    assert out["signals"][A]["estimated_cost"] == pytest.approx(1 / 1000 * 0.1 + 256 / 1000 * 0.2)
    cost = next(s for s in out["scorers"] if s["scorer"] == "cost")
    assert cost == {"scorer": "cost", "weight": 10.0, "scores": {A: 1.0, B: 0.0}}


def test_picks_since_the_scrape_count_toward_a_queueing_endpoint() -> None:
    from extproc.core.signals import waiting_now

    ep = EndpointLoad(waiting=3, running=4, inflight=2, at=time.monotonic())
    assert waiting_now(ep, 5) == 6  # three more picks since the scrape left
    assert waiting_now(ep, 0) == 1  # two of those counted then have finished
    assert waiting_now(EndpointLoad(waiting=3, inflight=6), 0) == 0  # never below zero
    idle = EndpointLoad(waiting=0, running=1, inflight=0, at=time.monotonic())
    assert waiting_now(idle, 9) == 0  # free slots: it may have started them all
    # sheddable shed once this worker's own picks fill the queue between scrapes
    state = state_for(FLEET)
    board = _board({A: (4, 0.1), B: (4, 0.1)})
    assert _schedule(state, board, {"x-model-router-priority": "sheddable"}).model == "m"
    board.inflight.acquire(A, "r1")
    board.inflight.acquire(B, "r2")
    with pytest.raises(Overloaded):
        _schedule(state, board, {"x-model-router-priority": "sheddable"})
