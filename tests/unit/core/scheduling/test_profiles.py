"""The scheduling framework: profiles from the routing file, plugin parameters, the trace."""

from __future__ import annotations

from collections import Counter

import pytest

from extproc.control.compile import compile_routing
from extproc.control.errors import ConfigError
from extproc.control.loading import parse_config
from extproc.core.flow import RouterState
from extproc.core.protocols import understand_head
from extproc.core.request import InferenceRequest, RequestHead
from extproc.core.scheduling.profile import ScheduleTrace
from tests.unit.helpers import BASIC, run_flow, state_for

MODELS = """
models:
  m: {protocol: generic, versions: ["1", "2"]}
deployments:
  - {name: light, model: m, version: "1", endpoints: ["127.0.0.1:8001"], weight: 1}
  - {name: heavy, model: m, version: "1", endpoints: ["127.0.0.1:8002", "127.0.0.1:8003"],
     weight: 5, tags: {accelerator: a100}}
  - {name: disabled-v2, model: m, version: "2", endpoints: ["127.0.0.1:8004"], enabled: false}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        compile_routing(parse_config(text))
    return info.value.problems


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


def test_model_shorthand_picker_is_the_default_filters_with_that_picker() -> None:
    compiled = compile_routing(
        parse_config(
            MODELS.replace(
                'versions: ["1", "2"]}',
                'versions: ["1", "2"], scheduling: {picker: weighted_random, max_fallbacks: 0}}',
            )
        )
    )
    profile = compiled.scheduler.profile_for("m")
    assert profile.picker.name == "weighted_random" and profile.max_fallbacks == 0
    assert [f.name for f in profile.filters] == [f.name for f in compiled.scheduler.default.filters]


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


def test_unknown_plugins_bad_params_and_missing_required_filters_are_all_reported() -> None:
    found = problems(
        "scheduling:\n"
        "  profiles:\n"
        "    p:\n"
        "      filters: [routable, version, nope]\n"
        "      scorers: [{type: deployment_weight, params: {x: 1}}]\n"
        "      picker: {type: weighted_random, params: {seed: 'abc'}}\n" + MODELS
    )
    assert any(
        p.startswith("scheduling.profiles.p.filters[2]: unknown filter 'nope'") for p in found
    )
    assert any("scorers[0].params: unknown parameter(s) x (allowed: none)" in p for p in found)
    assert any(p.startswith("scheduling.profiles.p.picker.params.seed:") for p in found)
    assert any("every profile needs capabilities" in p for p in found)


def test_profile_references_are_checked_with_the_file() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("scheduling: {profile: nope}\n" + BASIC)
    assert any("scheduling.profile: 'nope' is not a profile" in p for p in info.value.problems)
    with pytest.raises(ConfigError) as info:
        parse_config(
            "models: {m: {protocol: openai, versions: ['1'], "
            "scheduling: {profile: x, picker: round_robin}}}"
        )
    assert any("name a profile or a picker, not both" in p for p in info.value.problems)


def test_picker_shorthand_conflicts_with_a_declared_default_profile() -> None:
    found = problems("scheduling: {picker: round_robin, profiles: {default: {}}}\n" + MODELS)
    assert any(p.startswith("scheduling.picker: profiles.default is declared") for p in found)
