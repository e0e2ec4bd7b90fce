"""The scheduling framework at work: profiles, scorers and pickers choosing endpoints, and the
trace. Compiling profiles from the routing file is ``tests/unit/control/compile/test_scheduling.py``'s."""

from __future__ import annotations

from collections import Counter

from extproc.core.flow import RouterState
from extproc.core.protocols import understand_head
from extproc.core.request import InferenceRequest, RequestHead
from extproc.core.scheduling.profile import ScheduleTrace
from tests.unit.helpers import run_flow, state_for

MODELS = """
models:
  m: {protocol: generic, versions: ["1", "2"]}
deployments:
  - {name: light, model: m, version: "1", endpoints: ["127.0.0.1:8001"], weight: 1}
  - {name: heavy, model: m, version: "1", endpoints: ["127.0.0.1:8002", "127.0.0.1:8003"],
     weight: 5, tags: {accelerator: a100}}
  - {name: disabled-v2, model: m, version: "2", endpoints: ["127.0.0.1:8004"], enabled: false}
"""


def _req(state: RouterState, headers: dict[str, str] | None = None) -> InferenceRequest:
    head = RequestHead("POST", "/api", {"x-model": "m", **(headers or {})})
    understood = understand_head(head)
    assert isinstance(understood, InferenceRequest)
    return understood


def test_default_profile_keeps_todays_round_robin() -> None:
    state = state_for(MODELS)
    assert state.snapshot is not None
    seen = [state.scheduler.schedule(_req(state), state.snapshot).endpoints[0] for _ in range(6)]
    assert seen == ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"] * 2


def test_named_profile_with_a_weighted_scorer_and_max_score() -> None:
    state = state_for(
        "scheduling:\n"
        "  profiles:\n"
        "    heavy-first:\n"
        "      scorers: [{type: deployment_weight, weight: 2}]\n"
        "      picker: {type: max_score, params: {seed: 1}}\n"
        "      max_fallbacks: 2\n"
        + MODELS.replace('versions: ["1", "2"]}', 'versions: ["1", "2"], '
                         "scheduling: {profile: heavy-first}}")
    )  # fmt: skip
    assert state.snapshot is not None
    decisions = [state.scheduler.schedule(_req(state), state.snapshot) for _ in range(50)]
    assert {d.deployment for d in decisions} == {"heavy"}
    assert all(d.endpoints[2] == "127.0.0.1:8001" for d in decisions)  # lightest is last
    assert {d.profile for d in decisions} == {"heavy-first"}
    assert Counter(d.endpoints[0] for d in decisions).keys() == {
        "127.0.0.1:8002",
        "127.0.0.1:8003",
    }  # ties between the heavy endpoints broken at random


def test_trace_shows_every_filter_and_score() -> None:
    state = state_for(
        "scheduling:\n  profiles:\n    p: {scorers: [{type: deployment_weight}], picker: max_score}\n"
        "  profile: p\n" + MODELS
    )
    assert state.snapshot is not None
    trace = ScheduleTrace()
    state.scheduler.schedule(
        _req(state, {"x-model-capabilities": "accelerator=a100"}), state.snapshot, None, trace
    )
    out = trace.as_dict()
    assert out["profile"] == "p" and out["picker"] == "max_score"
    by_name = {f["filter"]: f for f in out["filters"]}
    assert by_name["routable"]["kept"] == ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"]
    assert by_name["version"] == {"filter": "version", "applied": False}
    assert by_name["capabilities"]["kept"] == ["127.0.0.1:8002", "127.0.0.1:8003"]
    assert by_name["subset"]["applied"] is False
    assert out["scorers"][0]["scores"] == {"127.0.0.1:8002": 1.0, "127.0.0.1:8003": 1.0}


def test_a_filter_that_empties_the_pool_says_why() -> None:
    state = state_for(MODELS)
    flow, _ = run_flow(state, "POST", "/api", [("x-model", "m"), ("x-model-version", "2")])
    assert flow.outcome.error is not None and flow.outcome.error.status == 503
    assert "disabled-v2: disabled" in flow.outcome.error.message


def test_not_ejected_keeps_the_candidate_tuple_itself_when_it_drops_nothing() -> None:
    """Later steps memoise on the candidate tuple's identity (not_saturated, the static
    scores, least_busy_time): a filter that drops nothing must hand the same tuple on."""
    from types import SimpleNamespace
    from typing import Any, cast

    from extproc.core.scheduling.filters.not_ejected import NotEjected

    cands = cast(Any, tuple(SimpleNamespace(address=a) for a in ("a:1", "b:1", "c:1")))

    def req(ejected: dict[str, float]) -> Any:
        return SimpleNamespace(signals=SimpleNamespace(ejected=ejected), now=100.0)

    f = NotEjected()
    assert f.filter(req({}), cands) is cands
    assert f.filter(req({"a:1": 50.0, "z:1": 200.0}), cands) is cands  # over, or elsewhere
    assert f.filter(req({"b:1": 200.0}), cands) == (cands[0], cands[2])
    assert f.filter(req({a: 200.0 for a in ("a:1", "b:1", "c:1")}), cands) is cands  # all: keep
