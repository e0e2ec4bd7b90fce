"""Protocol well-formedness (400) and model specs (422).

Every corpus case runs through the real flow in ``test_corpus_identification.py``.
"""

from __future__ import annotations

import copy
import struct
from typing import Any

import pytest

from extproc.control.compile.specs import compile_spec, parse_specs
from extproc.control.errors import SpecError
from extproc.core.errors import InvalidRequest, SpecViolation
from extproc.core.protocols import kserve_v2, openai
from extproc.core.specs.check import CompiledSpec, prompt_chars
from tests.corpus import require_corpus, specs

CHAT, COMPLETIONS, EMBEDDINGS = openai.CHAT, openai.COMPLETIONS, openai.EMBEDDINGS


@pytest.fixture(scope="module")
def compiled() -> dict[str, CompiledSpec]:
    require_corpus()
    return parse_specs(specs())


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


# --------------------------------------------------------------------------- OpenAI protocol


def user(text: str = "hi") -> dict[str, Any]:
    return {"role": "user", "content": text}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (CHAT, {"messages": [user()]}, "/model"),
        (CHAT, {"model": 7, "messages": [user()]}, "/model"),
        (CHAT, {"model": "", "messages": [user()]}, "/model"),
        (CHAT, {"model": "m"}, "/messages"),
        (CHAT, {"model": "m", "messages": {"role": "user"}}, "/messages"),
        (CHAT, {"model": "m", "messages": []}, "/messages"),
        (CHAT, {"model": "m", "messages": [user(), "hi"]}, "/messages/1"),
        (CHAT, {"model": "m", "messages": [{"content": "x"}]}, "/messages/0/role"),
        (CHAT, {"model": "m", "messages": [{"role": "User", "content": "x"}]}, "/messages/0/role"),
        (
            CHAT,
            {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
            "/messages/0/tool_call_id",
        ),
        (CHAT, {"model": "m", "messages": [{"role": "user", "content": 3}]}, "/messages/0/content"),
        (
            CHAT,
            {"model": "m", "messages": [{"role": "user", "content": [{"text": "x"}]}]},
            "/messages/0/content/0",
        ),
        (
            CHAT,
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "/messages/0/content/0/text",
        ),
        (CHAT, {"model": "m", "messages": [user()], "max_tokens": "many"}, "/max_tokens"),
        (
            CHAT,
            {"model": "m", "messages": [user()], "max_completion_tokens": -1},
            "/max_completion_tokens",
        ),
        (CHAT, {"model": "m", "messages": [user()], "max_tokens": True}, "/max_tokens"),
        (COMPLETIONS, {"model": "m"}, "/prompt"),
        (COMPLETIONS, {"model": "m", "prompt": {"text": "x"}}, "/prompt"),
        (COMPLETIONS, {"model": "m", "prompt": ["a", 1]}, "/prompt/1"),
        (COMPLETIONS, {"model": "m", "prompt": [1, -2]}, "/prompt/1"),
        (COMPLETIONS, {"model": "m", "prompt": [[1], [2, "x"]]}, "/prompt/1"),
        (COMPLETIONS, {"model": "m", "prompt": [1.5]}, "/prompt/0"),
        (EMBEDDINGS, {"model": "m"}, "/input"),
        (EMBEDDINGS, {"model": "m", "input": None}, "/input"),
        (EMBEDDINGS, {"model": "m", "input": [True]}, "/input/0"),
    ],
)
def test_openai_malformed_requests(path: str, body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        openai.check_request(path, body)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            CHAT,
            {
                "model": "m",
                "messages": [{"role": r, "content": "x"} for r in ("system", "developer", "user")],
            },
        ),
        (
            CHAT,
            {
                "model": "m",
                "messages": [
                    user(),
                    {"role": "assistant", "content": None, "tool_calls": []},
                    {"role": "tool", "tool_call_id": "c1", "content": "42"},
                ],
            },
        ),
        (
            CHAT,
            {
                "model": "m",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://x"}},
                            {"type": "text", "text": "what"},
                        ],
                    }
                ],
            },
        ),
        (
            CHAT,
            {"model": "m", "messages": [user()], "max_tokens": None, "max_completion_tokens": 5},
        ),
        (COMPLETIONS, {"model": "m", "prompt": ""}),
        (COMPLETIONS, {"model": "m", "prompt": []}),
        (COMPLETIONS, {"model": "m", "prompt": [[1, 2], []]}),
        (EMBEDDINGS, {"model": "m", "input": ["a", "b"]}),
        (EMBEDDINGS, {"model": "m", "input": [0, 1, 2]}),
        ("/v1/other", {"model": "m"}),
    ],
)
def test_openai_well_formed_requests(path: str, body: dict[str, Any]) -> None:
    openai.check_request(path, body)


# --------------------------------------------------------------------------- KServe protocol


def tensor(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "/inputs"),
        ({"inputs": {}}, "/inputs"),
        ({"inputs": [3]}, "/inputs/0"),
        ({"inputs": [tensor(name=None)]}, "/inputs/0/name"),
        ({"inputs": [tensor(), tensor()]}, "/inputs/1/name"),
        ({"inputs": [tensor(datatype="FLOAT")]}, "/inputs/0/datatype"),
        ({"inputs": [tensor(shape=None)]}, "/inputs/0/shape"),
        ({"inputs": [tensor(shape=[-1, 4])]}, "/inputs/0/shape"),
        ({"inputs": [tensor(shape=[2, 2.0])]}, "/inputs/0/shape"),
        ({"inputs": [tensor(data=[1, 2, 3])]}, "/inputs/0/data"),
        ({"inputs": [tensor(data=[[1, 2], [3]])]}, "/inputs/0/data"),
        ({"inputs": [tensor(data=[1, 2, 3, "4"])]}, "/inputs/0/data"),
        ({"inputs": [tensor(data=5)]}, "/inputs/0/data"),
        ({"inputs": [tensor(datatype="INT32", data=[1, 2, 3, 4.5])]}, "/inputs/0/data"),
        ({"inputs": [tensor(datatype="BOOL", data=[1, 0, 1, 0])]}, "/inputs/0/data"),
        ({"inputs": [tensor(data=None)]}, "/inputs/0"),
        ({"inputs": [tensor(parameters=[])]}, "/inputs/0/parameters"),
        (
            {"inputs": [tensor(parameters={"binary_data_size": 16})]},
            "/inputs/0/parameters/binary_data_size",
        ),
        (
            {"inputs": [tensor(data=None, parameters={"binary_data_size": 16})]},
            "/inputs/0/parameters/binary_data_size",
        ),
        ({"inputs": [tensor()], "outputs": {}}, "/outputs"),
        ({"inputs": [tensor()], "outputs": [{"name": 1}]}, "/outputs/0/name"),
        ({"inputs": [tensor()], "parameters": 3}, "/parameters"),
    ],
)
def test_kserve_malformed_requests(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        kserve_v2.check_request(body)
    assert info.value.field == field


def test_kserve_well_formed_json_requests() -> None:
    kserve_v2.check_request(
        {"inputs": [tensor(data=[[1, 2.5], [3, 4]])], "outputs": [{"name": "y"}]}
    )
    kserve_v2.check_request({"inputs": [tensor(datatype="BYTES", data=["a", "b", "c", "d"])]})
    kserve_v2.check_request({"inputs": [tensor(datatype="BOOL", data=[True, False, True, False])]})
    kserve_v2.check_request({"inputs": [tensor(shape=[0, 3], data=[])]})
    kserve_v2.check_request(
        {"inputs": [tensor(data=None, parameters={"shared_memory_region": "r"})]}
    )
    kserve_v2.check_request({"inputs": []})


def bin_tensor(datatype: str, shape: list[int], size: int) -> dict[str, Any]:
    return {
        "name": f"t{size}",
        "datatype": datatype,
        "shape": shape,
        "parameters": {"binary_data_size": size},
    }


@pytest.mark.parametrize(
    ("datatype", "shape", "blob"),
    [
        ("FP32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
        ("INT64", [3], struct.pack("<3q", 1, 2, 3)),
        ("BOOL", [2], b"\x01\x00"),
        ("FP16", [1, 2], b"\x00\x3c\x00\x40"),
        ("BF16", [1], b"\x80\x3f"),
        ("UINT8", [5], b"abcde"),
        ("BYTES", [2], struct.pack("<I", 2) + b"PT" + struct.pack("<I", 0)),
        ("BYTES", [0], b""),
    ],
)
def test_kserve_binary_sizes_add_up(datatype: str, shape: list[int], blob: bytes) -> None:
    kserve_v2.check_request({"inputs": [bin_tensor(datatype, shape, len(blob))]}, blob)


@pytest.mark.parametrize(
    ("inputs", "blob", "field"),
    [
        ([bin_tensor("FP32", [2, 2], 12)], b"\x00" * 12, "/inputs/0/parameters/binary_data_size"),
        ([bin_tensor("FP32", [2, 2], 16)], b"\x00" * 15, "/inputs/0/parameters/binary_data_size"),
        ([bin_tensor("FP32", [2, 2], 16)], b"\x00" * 17, None),
        (
            [bin_tensor("INT8", [2], 2), bin_tensor("INT8", [2], 3)],
            b"\x00" * 5,
            "/inputs/1/parameters/binary_data_size",
        ),
        (
            [bin_tensor("BYTES", [2], 6)],
            struct.pack("<I", 2) + b"PT",
            "/inputs/0/parameters/binary_data_size",
        ),
        (
            [bin_tensor("BYTES", [1], 7)],
            struct.pack("<I", 9) + b"abc",
            "/inputs/0/parameters/binary_data_size",
        ),
        ([bin_tensor("BYTES", [1], 3)], b"\x01\x00\x00", "/inputs/0/parameters/binary_data_size"),
        (
            [bin_tensor("BYTES", [1], 10)],
            (struct.pack("<I", 1) + b"a") * 2 + b"\x00\x00",
            "/inputs/0/parameters/binary_data_size",
        ),
        ([bin_tensor("FP32", [1], -4)], b"", "/inputs/0/parameters/binary_data_size"),
        (
            [{**bin_tensor("FP32", [1], 4), "data": [1.0]}],
            b"\x00" * 4,
            "/inputs/0/parameters/binary_data_size",
        ),
    ],
)
def test_kserve_binary_size_mismatches(
    inputs: list[dict[str, Any]], blob: bytes, field: str | None
) -> None:
    with pytest.raises(InvalidRequest) as info:
        kserve_v2.check_request({"inputs": inputs}, blob)
    assert info.value.field == field


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
    assert info.value.message.startswith(rule + ":")


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
