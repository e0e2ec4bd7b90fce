"""Protocol well-formedness (400): the checks every OpenAI and KServe v2 request passes,
whatever the model. Model specs (422) are tested in ``tests/unit/core/specs/test_check.py``;
every corpus case runs through the real flow in ``tests/unit/core/test_corpus_identification.py``.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from extproc.core.errors import InvalidRequest
from extproc.core.protocols import kserve_v2, openai

CHAT, COMPLETIONS, EMBEDDINGS = openai.CHAT, openai.COMPLETIONS, openai.EMBEDDINGS
RESPONSES = openai.RESPONSES


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
        (RESPONSES, {"input": "x"}, "/model"),
        (RESPONSES, {"model": "m", "input": 3}, "/input"),
        (RESPONSES, {"model": "m", "input": ["x"]}, "/input/0"),
        (RESPONSES, {"model": "m", "input": [{"content": "x"}]}, "/input/0"),
        (RESPONSES, {"model": "m", "input": [{"role": "tool", "content": "x"}]}, "/input/0/role"),
        (RESPONSES, {"model": "m", "input": [{"role": "user", "content": 1}]}, "/input/0/content"),
        (
            RESPONSES,
            {"model": "m", "input": [{"role": "user", "content": [{"text": "x"}]}]},
            "/input/0/content/0",
        ),
        (
            RESPONSES,
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "/input/0/content/0/text",
        ),
        (RESPONSES, {"model": "m", "input": "x", "max_output_tokens": -1}, "/max_output_tokens"),
        (RESPONSES, {"model": "m", "input": "x", "instructions": ["a"]}, "/instructions"),
    ],
)
def test_openai_malformed_requests(path: str, body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        openai.check_request(path, body)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (RESPONSES, {"model": "m", "input": "hi", "max_output_tokens": 16}),
        (RESPONSES, {"model": "m", "previous_response_id": "resp_1"}),
        (
            RESPONSES,
            {
                "model": "m",
                "instructions": "be brief",
                "input": [
                    {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                    {"type": "message", "role": "assistant", "content": "hello"},
                    {"type": "function_call_output", "call_id": "c1", "output": "42"},
                ],
            },
        ),
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
