"""Scheduling profiles from the routing file (``extproc.control.compile.scheduling``):
shorthands, plugin names and parameters, and references, every problem reported."""

from __future__ import annotations

import pytest

from extproc.control.compile import compile_routing
from extproc.control.errors import ConfigError
from extproc.control.loading import parse_config
from tests.unit.helpers import BASIC

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


def test_profile_references_are_checked() -> None:
    found = problems("scheduling: {profile: nope}\n" + BASIC)
    assert any("scheduling.profile: 'nope' is not a profile" in p for p in found)
    assert any("gie-default" in p and "load-aware" in p for p in found)  # built-ins listed
    found = problems(BASIC.replace(
        'chat-small: {protocol: openai, versions: ["1", "2"]}',
        'chat-small: {protocol: openai, versions: ["1", "2"], scheduling: {profile: zz}}',
    ))  # fmt: skip
    assert any("models.chat-small.scheduling.profile: 'zz'" in p for p in found)
    with pytest.raises(ConfigError) as info:
        parse_config(
            "models: {m: {protocol: openai, versions: ['1'], "
            "scheduling: {profile: x, picker: round_robin}}}"
        )
    assert any("name a profile or a picker, not both" in p for p in info.value.problems)


def test_picker_shorthand_conflicts_with_a_declared_default_profile() -> None:
    found = problems("scheduling: {picker: round_robin, profiles: {default: {}}}\n" + MODELS)
    assert any(p.startswith("scheduling.picker: profiles.default is declared") for p in found)
