"""Compiling content rules (``extproc.control.compile.rules``): every mistake in a rule is
reported with where it is, nothing but RulesError escapes, and the shipped examples compile."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings

from extproc.control.compile.rules import compile_rules
from extproc.control.errors import RulesError
from tests.support import ROOT
from tests.unit.strategies import yaml_values

# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{rules: 1}", "rules: must be a list of rules"),
        ("[1]", "rules[0]: must be a mapping with name, when and route"),
        ("[{when: {model: a}, route: {model: b}}]", "rules[0].name: required"),
        ("[{name: 'a b', when: {model: a}, route: {model: b}}]", "rules[0].name: required"),
        ("[{name: a, route: {model: b}}]", "rules[0].when: required"),
        ("[{name: a, when: {}, route: {model: b}}]", "rules[0].when: required"),
        ("[{name: a, when: [], route: {model: b}}]", "rules[0].when: required"),
        ("[{name: a, when: {model: a}}]", "rules[0].route: required"),
        ("[{name: a, when: {model: a}, route: {}}]", "rules[0].route: required"),
        (
            "[{name: a, when: {model: a}, route: {capabilities: ''}}]",
            "rules[0].route: needs at least one",
        ),
        (
            "[{name: a, when: {model: a}, route: {model: b, weight: 2}}]",
            "rules[0].route.weight: unknown action",
        ),
        (
            "[{name: a, when: {model: a}, route: {model: ''}}]",
            "rules[0].route.model: must be a non-empty string",
        ),
        (
            "[{name: a, when: {model: a}, route: {version: true}}]",
            "rules[0].route.version: must be",
        ),
        (
            "[{name: a, when: {model: a}, route: {capabilities: 'x>=abc'}}]",
            "rules[0].route.capabilities: item 'x>=abc': >= needs a number",
        ),
        (
            "[{name: a, when: {model: a}, route: {capabilities: 'nope'}}]",
            "rules[0].route.capabilities: item 'nope' is not key=value",
        ),
        (
            "[{name: a, when: {model: a}, route: {capabilities: {k: [1]}}}]",
            "rules[0].route.capabilities.k: must map",
        ),
        (
            "[{name: a, when: {model: a}, route: {model: b}, extra: 1}]",
            "rules[0].extra: unknown key",
        ),
        (
            "[{name: a, when: {modle: a}, route: {model: b}}]",
            "rules[0].when.modle: unknown condition",
        ),
        (
            "[{name: a, when: {model: 3}, route: {model: b}}]",
            "rules[0].when.model: must be a string",
        ),
        (
            "[{name: a, when: {model: []}, route: {model: b}}]",
            "rules[0].when.model: must be a string",
        ),
        (
            "[{name: a, when: {path: {regex: '('}}, route: {model: b}}]",
            "rules[0].when.path.regex: bad regular expression: missing ), unterminated subpattern",
        ),
        (
            "[{name: a, when: {path: {regex: x, other: 1}}, route: {model: b}}]",
            "rules[0].when.path: must be",
        ),
        (
            "[{name: a, when: {protocol: grpc}, route: {model: b}}]",
            "rules[0].when.protocol: must be openai",
        ),
        (
            "[{name: a, when: {header: [x]}, route: {model: b}}]",
            "rules[0].when.header: must be a mapping",
        ),
        (
            "[{name: a, when: {header: {x-a: 1}}, route: {model: b}}]",
            "rules[0].when.header.x-a: must be a string",
        ),
        ("[{name: a, when: {has: [1]}, route: {model: b}}]", "rules[0].when.has: must be a list"),
        (
            "[{name: a, when: {messages: 12}, route: {model: b}}]",
            "rules[0].when.messages: must be a mapping of gt/gte/lt/lte/eq to numbers",
        ),
        (
            "[{name: a, when: {messages: {ge: 1}}, route: {model: b}}]",
            "rules[0].when.messages: must be a mapping",
        ),
        (
            "[{name: a, when: {prompt_chars: {gt: '1'}}, route: {model: b}}]",
            "rules[0].when.prompt_chars: must be a mapping",
        ),
        (
            "[{name: a, when: {max_tokens: {gt: true}}, route: {model: b}}]",
            "rules[0].when.max_tokens: must be a mapping",
        ),
        (
            "[{name: a, when: {batch_size: {gt: .nan}}, route: {model: b}}]",
            "rules[0].when.batch_size: must be a mapping",
        ),
        (
            "[{name: a, when: {last_user_message: 'x'}, route: {model: b}}]",
            "rules[0].when.last_user_message: must be {regex",
        ),
        (
            "[{name: a, when: {last_user_message: {contains: ''}}, route: {model: b}}]",
            "rules[0].when.last_user_message.contains: must be",
        ),
        (
            "[{name: a, when: {last_user_message: {regex: '[a'}}, route: {model: b}}]",
            "rules[0].when.last_user_message.regex: bad regular expression",
        ),
        (
            "[{name: a, when: {body_field: {equals: 1}}, route: {model: b}}]",
            "rules[0].when.body_field.pointer: required",
        ),
        (
            "[{name: a, when: {body_field: {pointer: a, equals: 1}}, route: {model: b}}]",
            "rules[0].when.body_field.pointer: required",
        ),
        (
            "[{name: a, when: {body_field: {pointer: /a~2, equals: 1}}, route: {model: b}}]",
            "rules[0].when.body_field.pointer: '~' must be",
        ),
        (
            "[{name: a, when: {body_field: {pointer: /a}}, route: {model: b}}]",
            "rules[0].when.body_field: needs exactly one",
        ),
        (
            "[{name: a, when: {body_field: {pointer: /a, equals: 1, regex: x}}, route: {model: b}}]",
            "rules[0].when.body_field: needs exactly one",
        ),
        (
            "[{name: a, when: {body_field: {pointer: /a, equals: [1]}}, route: {model: b}}]",
            "rules[0].when.body_field.equals: must be",
        ),
        (
            "[{name: a, when: {body_field: {pointer: /a, exists: 1}}, route: {model: b}}]",
            "rules[0].when.body_field.exists: must be true or false",
        ),
        (
            "[{name: a, when: {body_field: {pointer: /a, is: 1}}, route: {model: b}}]",
            "rules[0].when.body_field.is: unknown key",
        ),
        (
            "[{name: a, when: {body_field: {pointer: /a, gt: x}}, route: {model: b}}]",
            "rules[0].when.body_field: must be a mapping of gt",
        ),
        (
            "[{name: a, when: {any: []}, route: {model: b}}]",
            "rules[0].when.any: must be a non-empty list",
        ),
        (
            "[{name: a, when: {any: [{model: a}, {}]}, route: {model: b}}]",
            "rules[0].when.any[1]: required",
        ),
        (
            "[{name: a, when: {any: [{messages: {gt: x}}]}, route: {model: b}}]",
            "rules[0].when.any[0].messages: must be a mapping of gt/gte/lt/lte/eq to numbers",
        ),
        ("[{name: a, when: {not: {has: 3}}, route: {model: b}}]", "rules[0].when.not.has: must be"),
    ],
)
def test_validation_problem(text: str, problem: str) -> None:
    with pytest.raises(RulesError) as info:
        compile_rules(yaml.safe_load(text))
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems
    assert isinstance(info.value, ValueError)


def test_every_problem_is_reported_with_where() -> None:
    text = """
    - {name: a, when: {model: a}, route: {model: b}}
    - {name: a, when: {messages: 1}, route: {}}
    - {name: c, when: {x: 1}, route: {model: b}}
    """
    with pytest.raises(RulesError) as info:
        compile_rules(yaml.safe_load(text), where="routes.yaml: rules")
    assert info.value.problems == [
        "routes.yaml: rules[1].name: duplicate rule name 'a'",
        "routes.yaml: rules[1].when.messages: must be a mapping of gt/gte/lt/lte/eq to numbers",
        "routes.yaml: rules[1].route: required: a mapping with model, version and/or capabilities",
        "routes.yaml: rules[2].when.x: unknown condition; use one of path, model, protocol, "
        "header, tenant, has, body_field, messages, prompt_chars, max_tokens, batch_size, "
        "last_user_message, any, not",
    ]


@settings(max_examples=200, deadline=None)
@given(raw=yaml_values)
def test_parse_raises_only_rules_error(raw: Any) -> None:
    for candidate in (
        raw,
        [raw],
        [{"name": "a", "when": raw, "route": {"model": "b"}}],
        [{"name": "a", "when": {"model": "m"}, "route": raw}],
    ):
        try:
            compile_rules(candidate)
        except RulesError as exc:
            assert exc.problems and all(isinstance(p, str) for p in exc.problems)


# --------------------------------------------------------------------------- shipped examples


def test_example_rules_parse() -> None:
    files = sorted((ROOT / "examples").glob("rules-*.yaml"))
    assert len(files) >= 3
    for f in files:
        doc = yaml.safe_load(f.read_text())
        rs = compile_rules(doc["rules"], tenant_header=doc.get("tenant_header", "x-tenant-id"))
        assert rs.target_models() <= set(doc["models"]), f


def test_keywords_must_be_a_non_empty_list() -> None:
    with pytest.raises(RulesError) as info:
        compile_rules([{"name": "x", "when": {"last_user_message": {"keywords": []}},
                        "route": {"version": "1"}}])  # fmt: skip
    assert info.value.problems == [
        "rules[0].when.last_user_message.keywords: must be a non-empty list of non-empty strings"
    ]
