"""Model specs (422): what each spec rule rejects and lets through, and the checks
``explain`` names. Parsing specs is ``tests/unit/control/compile/test_specs.py``'s.
"""

from __future__ import annotations

from typing import Any

import pytest

from extproc.control.compile.specs import compile_spec, parse_specs
from extproc.core.errors import SpecViolation
from extproc.core.protocols import openai
from extproc.core.specs.check import CompiledSpec, prompt_chars
from tests.corpus import require_corpus, specs

CHAT, COMPLETIONS, EMBEDDINGS = openai.CHAT, openai.COMPLETIONS, openai.EMBEDDINGS


@pytest.fixture(scope="module")
def compiled() -> dict[str, CompiledSpec]:
    require_corpus()
    return parse_specs(specs())


def user(text: str = "hi") -> dict[str, Any]:
    return {"role": "user", "content": text}


# --------------------------------------------------------------------------- the corpus


def test_corpus_is_complete() -> None:
    cases = require_corpus()
    assert len(cases) == 63
    assert {c.needs_spec for c in cases} - {None} <= set(specs())


def test_check_names_for_explain(compiled: dict[str, CompiledSpec]) -> None:
    body = {"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}
    assert compiled["chat-small"].check(body, "openai", CHAT) == [
        "forbidden_params",
        "max_tokens",
        "max_messages",
        "max_prompt_chars",
        "json_schema",
    ]
    k = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 2, 2]}]}
    assert compiled["resnet50"].check(k, "kserve_v2", "/v2/models/resnet50/infer") == [
        "tensor_name",
        "tensor_datatype",
        "tensor_shape",
        "required_input",
        "output_name",
    ]
    assert compiled["resnet50"].check(None, "generic", "/score") == []


# --------------------------------------------------------------------------- OpenAI specs


def chat(**kw: Any) -> dict[str, Any]:
    return {"model": "chat-small", "messages": [user()], **kw}


@pytest.mark.parametrize(
    ("body", "rule", "field"),
    [
        (chat(max_tokens=2049), "max_tokens", "/max_tokens"),
        (chat(max_completion_tokens=5000), "max_tokens", "/max_completion_tokens"),
        (chat(top_logprobs=2), "forbidden_params", "/top_logprobs"),
        (chat(logit_bias={}), "forbidden_params", "/logit_bias"),
        (chat(messages=[user()] * 17), "max_messages", "/messages"),
        (chat(messages=[user("x" * 8000), user("y" * 8001)]), "max_prompt_chars", "/messages"),
        (
            chat(messages=[{"role": "user", "content": [{"type": "text", "text": "é" * 16001}]}]),
            "max_prompt_chars",
            "/messages",
        ),
        (chat(n=5), "json_schema", "/n"),
        (chat(top_p=0), "json_schema", "/top_p"),
        (chat(stop=["a"] * 5), "json_schema", "/stop"),
        (chat(stop=3), "json_schema", "/stop"),
        (chat(response_format={}), "json_schema", "/response_format"),
        (chat(response_format={"type": "yaml"}), "json_schema", "/response_format/type"),
        (
            chat(stream_options={"include_usage": "yes"}),
            "json_schema",
            "/stream_options/include_usage",
        ),
        (chat(temperature=True), "json_schema", "/temperature"),
    ],
)
def test_openai_spec_violations(
    compiled: dict[str, CompiledSpec], body: dict[str, Any], rule: str, field: str
) -> None:
    openai.check_request(CHAT, body)  # well-formed: only the spec objects
    with pytest.raises(SpecViolation) as info:
        compiled["chat-small"].check(body, "openai", CHAT)
    assert (info.value.rule, info.value.field, info.value.status) == (rule, field, 422)
    # The rule travels in .rule (metrics, explain); the message says what is wrong, once.
    assert info.value.message and not info.value.message.startswith(rule + ":")


@pytest.mark.parametrize(
    "body",
    [
        chat(max_tokens=2048, max_completion_tokens=2048),
        chat(messages=[user("x" * 8000), user("😀" * 8000)]),
        chat(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:" + "A" * 20000}}],
                }
            ]
        ),
        chat(
            messages=[
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"function": {"arguments": "x" * 20000}}],
                }
            ]
        ),
        chat(n=4, top_k=-1, temperature=0, seed=2**70, stop="x", repetition_penalty=2),
        chat(n=2.0),
    ],
)
def test_openai_spec_passes(compiled: dict[str, CompiledSpec], body: dict[str, Any]) -> None:
    compiled["chat-small"].check(body, "openai", CHAT)


def test_prompt_chars_count_code_points_per_path() -> None:
    body = {
        "messages": [
            user("ab😀"),
            {
                "role": "user",
                "content": [{"type": "text", "text": "é"}, {"type": "image_url", "text": "zz"}],
            },
        ],
        "prompt": ["xyz", [1, 2]],
        "suffix": "s",
        "input": "12345",
    }
    assert prompt_chars(body, CHAT) == 4
    assert prompt_chars(body, COMPLETIONS) == 4
    assert prompt_chars(body, EMBEDDINGS) == 5
    assert prompt_chars(body, "/elsewhere") == 13


def test_embeddings_spec(compiled: dict[str, CompiledSpec]) -> None:
    spec = compiled["embed-mini"]
    spec.check({"model": "embed-mini", "input": ["a"] * 2048}, "openai", EMBEDDINGS)
    for body, field in [
        ({"model": "embed-mini", "input": ["a"] * 2049}, "/input"),
        ({"model": "embed-mini", "input": ""}, "/input"),
        ({"model": "embed-mini", "input": "x", "encoding_format": "int8"}, "/encoding_format"),
        ({"model": "embed-mini", "input": "x" * 120_001}, "/input"),
    ]:
        with pytest.raises(SpecViolation) as info:
            spec.check(body, "openai", EMBEDDINGS)
        assert info.value.field == field


def test_allowed_params_and_schema_pointers_with_odd_keys() -> None:
    spec = compile_spec(
        {
            "protocol": "openai",
            "openai": {
                "allowed_params": ["a.b", "x[0]", "x", "t/~"],
                "json_schema": {
                    "properties": {
                        "a.b": {"type": "integer"},
                        "x[0]": {"type": "string"},
                        "x": {
                            "type": "array",
                            "items": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                        "t/~": {"maximum": 1},
                    }
                },
            },
        },
        "m",
    )
    spec.check({"model": "m", "messages": [], "a.b": 1, "x": [{"k": "v"}]}, "openai", CHAT)
    for body, rule, field in [
        ({"temperature": 1}, "allowed_params", "/temperature"),
        ({"a.b": "s"}, "json_schema", "/a.b"),
        ({"x[0]": 1}, "json_schema", "/x[0]"),
        ({"x": [{}, {"k.z": 1}]}, "json_schema", "/x/1/k.z"),
        ({"t/~": 2}, "json_schema", "/t~1~0"),
    ]:
        with pytest.raises(SpecViolation) as info:
            spec.check({"model": "m", **body}, "openai", CHAT)
        assert (info.value.rule, info.value.field) == (rule, field)


# --------------------------------------------------------------------------- KServe specs


def fraud(*inputs: dict[str, Any], outputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": list(inputs)}
    if outputs is not None:
        body["outputs"] = outputs
    return body


F = {"name": "features", "datatype": "FP32", "shape": [3, 8]}
M = {"name": "merchant_category", "datatype": "INT64", "shape": [3, 1]}


@pytest.mark.parametrize(
    ("body", "rule", "field"),
    [
        (
            fraud(F, M, {"name": "zip", "datatype": "BYTES", "shape": [1, 1]}),
            "tensor_name",
            "/inputs/2/name",
        ),
        (fraud(F, {**M, "datatype": "INT32"}), "tensor_datatype", "/inputs/1/datatype"),
        (fraud({**F, "shape": [3, 9]}, M), "tensor_shape", "/inputs/0/shape"),
        (fraud({**F, "shape": [24]}, M), "tensor_shape", "/inputs/0/shape"),
        (fraud({**F, "shape": [1, 3, 8]}, M), "tensor_shape", "/inputs/0/shape"),
        (fraud(M), "required_input", "/inputs"),
        (
            fraud(F, M, outputs=[{"name": "label"}, {"name": "score"}]),
            "output_name",
            "/outputs/1/name",
        ),
    ],
)
def test_kserve_spec_violations(
    compiled: dict[str, CompiledSpec], body: dict[str, Any], rule: str, field: str
) -> None:
    with pytest.raises(SpecViolation) as info:
        compiled["fraud-xgb"].check(body, "kserve_v2", "/v2/models/fraud-xgb/infer")
    assert (info.value.rule, info.value.field) == (rule, field)


def test_kserve_spec_passes_with_wildcards_and_optional_inputs(
    compiled: dict[str, CompiledSpec],
) -> None:
    spec = compiled["fraud-xgb"]
    spec.check(fraud(F, M), "kserve_v2", "")
    spec.check(
        fraud(
            {**F, "shape": [100, 8]},
            M,
            {"name": "card_present", "datatype": "BOOL", "shape": [1, 1]},
            outputs=[{"name": "label"}],
        ),
        "kserve_v2",
        "",
    )


def test_protocol_mismatch_is_a_violation(compiled: dict[str, CompiledSpec]) -> None:
    with pytest.raises(SpecViolation) as info:
        compiled["chat-small"].check({"inputs": []}, "kserve_v2", "/v2/models/chat-small/infer")
    assert info.value.rule == "protocol"
    assert compiled["chat-small"].check(None, "generic", "/x") == []


def test_responses_requests_meet_the_openai_spec(compiled: dict[str, CompiledSpec]) -> None:
    """POST /v1/responses: max_tokens covers max_output_tokens, max_messages counts the
    input's messages, prompt characters count instructions and input text."""
    spec = compiled["chat-small"]  # max_tokens 2048, 16 messages, 16000 prompt chars
    responses = openai.RESPONSES
    ok = {"model": "chat-small", "input": "hi", "max_output_tokens": 2048}
    assert "max_tokens" in spec.check(ok, "openai", responses)
    cases = [
        ({**ok, "max_output_tokens": 2049}, "max_tokens", "/max_output_tokens"),
        ({**ok, "input": [user()] * 17}, "max_messages", "/input"),
        ({**ok, "input": "x" * 16001}, "max_prompt_chars", "/input"),
        ({**ok, "instructions": "x" * 16000}, "max_prompt_chars", "/input"),
    ]
    for body, rule, field in cases:
        with pytest.raises(SpecViolation) as info:
            spec.check(body, "openai", responses)
        assert (info.value.rule, info.value.field) == (rule, field)
    parts = {"role": "user", "content": [{"type": "input_text", "text": "abc"},
                                         {"type": "input_image", "image_url": "x" * 50}]}  # fmt: skip
    body = {"instructions": "de", "input": [parts, {"type": "function_call_output",
                                                    "output": "x" * 99}]}  # fmt: skip
    assert prompt_chars(body, responses) == 5
