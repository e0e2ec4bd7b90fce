"""Parsing and compiling model specs: every mistake is a SpecError naming the key."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extproc.control.compile.specs import compile_spec, parse_specs
from extproc.control.errors import SpecError
from extproc.core.errors import RouterError, SpecViolation
from extproc.core.protocols import openai
from extproc.core.specs.check import CompiledSpec
from tests.corpus import SAMPLES, require_corpus, specs
from tests.unit.strategies import SETTINGS, json_values

CHAT = openai.CHAT


@pytest.fixture(scope="module")
def compiled() -> dict[str, CompiledSpec]:
    require_corpus()
    return parse_specs(specs())


def user(text: str = "hi") -> dict[str, Any]:
    return {"role": "user", "content": text}


# --------------------------------------------------------------------------- parsing specs


def test_corpus_specs_parse(compiled: dict[str, CompiledSpec]) -> None:
    assert set(compiled) == {"chat-small", "chat-large", "embed-mini", "resnet50", "fraud-xgb"}
    assert compiled["resnet50"].versions == ("1", "2")
    assert compiled["chat-small"].validator is not None


def broken(path: list[str], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(dict(specs()))
    node: Any = raw
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "pointer"),
    [
        (["chat-small", "openai", "max_tokenz"], 5, "/chat-small/openai/max_tokenz"),
        (["chat-small", "openai", "max_tokens"], "2048", "/chat-small/openai/max_tokens"),
        (["chat-small", "openai", "max_messages"], -1, "/chat-small/openai/max_messages"),
        (
            ["chat-small", "openai", "forbidden_params"],
            "logprobs",
            "/chat-small/openai/forbidden_params",
        ),
        (["chat-small", "protocol"], "grpc", "/chat-small/protocol"),
        (["chat-small", "model"], "chat-smol", "/chat-small/model"),
        (["chat-small", "kserve_v2"], {}, "/chat-small/kserve_v2"),
        (["chat-small", "extra"], 1, "/chat-small/extra"),
        (
            ["chat-small", "openai", "json_schema", "properties", "n", "maximun"],
            4,
            "/chat-small/openai/json_schema/properties/n/maximun",
        ),
        (
            ["chat-small", "openai", "json_schema", "properties", "n", "type"],
            "int",
            "/chat-small/openai/json_schema/properties/n/type",
        ),
        (
            ["chat-small", "openai", "json_schema", "properties", "n", "maximum"],
            "4",
            "/chat-small/openai/json_schema/properties/n/maximum",
        ),
        (
            ["chat-small", "openai", "json_schema", "properties", "stop", "anyOf"],
            [],
            "/chat-small/openai/json_schema/properties/stop/anyOf",
        ),
        (
            ["chat-small", "openai", "json_schema", "properties", "tools", "prefixItems"],
            [{}],
            "/chat-small/openai/json_schema/properties/tools/prefixItems",
        ),
        (
            ["chat-small", "openai", "json_schema", "properties", "tools", "items"],
            [{}],
            "/chat-small/openai/json_schema/properties/tools/items",
        ),
        (
            ["chat-small", "openai", "json_schema", "properties", "seed", "pattern"],
            "(",
            "/chat-small/openai/json_schema/properties/seed/pattern",
        ),
        (
            ["chat-small", "openai", "json_schema", "properties", "seed", "$ref"],
            "https://example.com/s.json",
            "/chat-small/openai/json_schema/properties/seed/$ref",
        ),
        (
            ["chat-small", "openai", "json_schema", "$schema"],
            "http://json-schema.org/draft-04/schema#",
            "/chat-small/openai/json_schema/$schema",
        ),
        (
            ["resnet50", "kserve_v2", "inputs", 0, "datatype"],
            "FLOAT32",
            "/resnet50/kserve_v2/inputs/0/datatype",
        ),
        (
            ["resnet50", "kserve_v2", "inputs", 0, "shape"],
            [-2, 3],
            "/resnet50/kserve_v2/inputs/0/shape",
        ),
        (
            ["resnet50", "kserve_v2", "inputs", 0, "shape"],
            KeyError,
            "/resnet50/kserve_v2/inputs/0/shape",
        ),
        (
            ["resnet50", "kserve_v2", "inputs", 0, "optional"],
            "yes",
            "/resnet50/kserve_v2/inputs/0/optional",
        ),
        (
            ["resnet50", "kserve_v2", "outputs", 1, "name"],
            "logits",
            "/resnet50/kserve_v2/outputs/1/name",
        ),
        (["resnet50", "kserve_v2", "outputs"], {}, "/resnet50/kserve_v2/outputs"),
    ],
)
def test_bad_specs_name_the_key(path: list[Any], value: Any, pointer: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_specs(broken(path, value))
    assert isinstance(info.value, ValueError)
    assert any(p.startswith(pointer + ":") for p in info.value.problems), info.value.problems


def test_schema_refs_and_annotations() -> None:
    spec = compile_spec(
        {
            "protocol": "openai",
            "openai": {
                "json_schema": {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "title": "t",
                    "$defs": {"temp": {"type": "number", "maximum": 2, "format": "not-checked"}},
                    "properties": {
                        "temperature": {"$ref": "#/$defs/temp"},
                        "user": {"type": "string", "format": "email", "default": "x"},
                    },
                }
            },
        },
        "m",
    )
    body = {"model": "m", "messages": [user()], "user": "not an email"}
    spec.check(body, "openai", CHAT)
    assert "temperature" not in body and body["user"] == "not an email"  # no defaults filled in
    with pytest.raises(SpecViolation) as info:
        spec.check({**body, "temperature": 3}, "openai", CHAT)
    assert info.value.field == "/temperature"


def test_parse_specs_rejects_non_objects() -> None:
    with pytest.raises(SpecError):
        parse_specs([])  # type: ignore[arg-type]
    with pytest.raises(SpecError):
        parse_specs({"m": 3})
    assert parse_specs({"g": {"protocol": "generic"}})["g"].check({"a": 1}, "generic", "/x") == []


@SETTINGS
@given(path=st.lists(st.integers(0, 6), min_size=1, max_size=6), value=json_values)
def test_hostile_specs_are_spec_errors(path: list[int], value: Any) -> None:
    """A spec with any value swapped in anywhere parses or raises SpecError, nothing else."""
    raw: Any = json.loads((SAMPLES / "specs.json").read_text())
    node = raw
    for i in path[:-1]:
        children = list(node.values()) if isinstance(node, dict) else node
        if not isinstance(children, list) or not children:
            break
        child = children[i % len(children)]
        if not isinstance(child, dict | list):
            break
        node = child
    if isinstance(node, dict) and node:
        node[list(node)[path[-1] % len(node)]] = value
    elif isinstance(node, list) and node:
        node[path[-1] % len(node)] = value
    try:
        parsed = parse_specs(raw)
    except ValueError as exc:
        assert str(exc)
        return
    for spec in parsed.values():  # whatever parsed must check bodies without crashing
        with contextlib.suppress(RouterError):
            spec.check(
                {"model": "m", "messages": [{}], "inputs": [1, {}], "outputs": [2]},
                spec.protocol,
                "/v1/chat/completions",
            )
