"""Triton's ``tritonclient`` (http and aio), unmodified, through Envoy and the router, in
front of KServe's own ModelServer (``fraud-xgb``, echo model) and our dev KServe server
(``org/dev-fraud``: Triton's /config and /stats, gzip and deflate bodies, which KServe's
server does not decode)."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from tritonclient.utils import InferenceServerException

from tests.integration.conftest import ClientsEnv

pytestmark = pytest.mark.integration

NAMES = ("features", "merchant_category", "country", "card_present")
VALUES: dict[str, np.ndarray[Any, Any]] = {
    "features": np.arange(8, dtype=np.float32).reshape(1, 8) / 3,
    "merchant_category": np.array([[5411]], dtype=np.int64),
    "country": np.array([["Zürich".encode()]], dtype=np.object_),
    "card_present": np.array([[True]], dtype=np.bool_),
}
DATATYPES = {"features": "FP32", "merchant_category": "INT64", "country": "BYTES",
             "card_present": "BOOL"}  # fmt: skip
JSON = {"content-type": "application/json"}  # KServe's server needs it on JSON bodies


def inputs(binary: bool) -> list[triton.InferInput]:
    out = []
    for name in NAMES:
        t = triton.InferInput(name, list(VALUES[name].shape), DATATYPES[name])
        t.set_data_from_numpy(VALUES[name], binary_data=binary)
        out.append(t)
    return out


def outputs(binary: bool) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(n, binary_data=binary) for n in NAMES]


def assert_echoed(result: Any) -> None:
    """Every tensor came back with its datatype and exact bytes."""
    for name in NAMES:
        got = result.as_numpy(name)
        assert result.get_output(name)["datatype"] == DATATYPES[name]
        if DATATYPES[name] == "BYTES":
            assert [bytes(x) if not isinstance(x, str) else x.encode() for x in got.ravel()] == [
                bytes(x) for x in VALUES[name].ravel()
            ]
        else:
            assert got.dtype == VALUES[name].dtype
            assert got.tobytes() == VALUES[name].tobytes()


def client(env: ClientsEnv, *, direct: str | None = None) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(direct or env.router, network_timeout=30)


def test_server_health_and_metadata_from_the_router(clients_env: ClientsEnv) -> None:
    c = client(clients_env)
    assert c.is_server_live() is True
    assert c.is_server_ready() is True
    meta = c.get_server_metadata()
    assert meta["name"] == "model-router" and meta["version"]
    assert "binary_tensor_data" in meta["extensions"]


def test_model_health_metadata_config_and_stats(clients_env: ClientsEnv) -> None:
    c = client(clients_env)
    assert c.is_model_ready("fraud-xgb") is True  # KServe's answer
    assert c.get_model_metadata("fraud-xgb")["name"] == "fraud-xgb"
    assert c.is_model_ready("org/dev-fraud") is True  # a name with '/'
    config = c.get_model_config("org/dev-fraud")
    assert config["name"] == "org/dev-fraud"
    assert [t["name"] for t in config["input"]] == list(NAMES)
    stats = c.get_inference_statistics("org/dev-fraud")
    assert stats["model_stats"][0]["name"] == "org/dev-fraud"
    # KServe's server has no /config: the request reached it (its 404), not the router's
    # "model 'fraud-xgb/config' is not registered".
    with pytest.raises(InferenceServerException) as info:
        c.get_model_config("fraud-xgb")
    assert info.value.status() == "404"
    assert "Not Found" in str(info.value) and "not registered" not in str(info.value)
    assert not c.is_model_ready("unknown-model")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_round_trips_every_datatype_through_kserve(
    clients_env: ClientsEnv, binary: bool
) -> None:
    headers = None if binary else JSON
    direct = client(clients_env, direct=clients_env.kserve.address)
    assert_echoed(direct.infer("fraud-xgb", inputs(binary), outputs=outputs(binary),
                               headers=headers and dict(headers)))  # fmt: skip
    via = client(clients_env).infer(
        "fraud-xgb", inputs(binary), outputs=outputs(binary), headers=headers and dict(headers)
    )
    assert_echoed(via)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("compression", [None, "gzip", "deflate"])
def test_infer_default_headers_and_compression(
    clients_env: ClientsEnv, binary: bool, compression: str | None
) -> None:
    """tritonclient's defaults (no content type), gzip and deflate: the router reads and
    checks the body against the model's spec, the dev server (like Triton) inflates it."""
    result = client(clients_env).infer(
        "org/dev-fraud", inputs(binary), request_compression_algorithm=compression
    )
    assert result.get_response()["model_name"] == "org/dev-fraud"
    received = clients_env.dev.received[-1]
    assert received.headers.get("content-encoding") == compression
    # A spec violation inside a compressed body is found (the router inflated it).
    bad = triton.InferInput("features", [1, 7], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 7), dtype=np.float32), binary_data=binary)
    with pytest.raises(InferenceServerException) as info:
        client(clients_env).infer(
            "org/dev-fraud", [bad, *inputs(binary)[1:]], request_compression_algorithm=compression
        )
    assert info.value.status() == "422"
    assert "input 'features' must have shape [-1,8] (-1: any size), not [1,7]" in str(info.value)


def test_kserve_itself_refuses_json_without_a_content_type(clients_env: ClientsEnv) -> None:
    """The router no longer answers 415 for tritonclient's default headers; KServe's own
    server (not Triton) then reads the body as bytes and says so."""
    with pytest.raises(InferenceServerException) as info:
        client(clients_env).infer("fraud-xgb", inputs(False))
    assert info.value.status() == "400"
    assert "inference-header-content-length" in str(info.value)


@pytest.mark.parametrize(
    ("model", "tensors", "requested", "status", "text"),
    [
        ("unknown-model", None, None, "404", "model 'unknown-model' is not registered"),
        ("fraud-xgb", "shape", None, "422", "input 'features' must have shape"),
        ("fraud-xgb", None, "nope", "422", "the model has no output 'nope'"),
        ("fraud-xgb", "datatype", None, "422", "input 'merchant_category' is INT64, not 'FP32'"),
    ],
)
def test_router_errors_are_printable(
    clients_env: ClientsEnv, model: str, tensors: str | None, requested: str | None,
    status: str, text: str,
) -> None:  # fmt: skip
    ins = inputs(False)
    if tensors == "shape":
        ins[0] = triton.InferInput("features", [2, 4], "FP32")
        ins[0].set_data_from_numpy(np.zeros((2, 4), dtype=np.float32), binary_data=False)
    elif tensors == "datatype":
        ins[1] = triton.InferInput("merchant_category", [1, 1], "FP32")
        ins[1].set_data_from_numpy(np.zeros((1, 1), dtype=np.float32), binary_data=False)
    outs = [triton.InferRequestedOutput(requested)] if requested else None
    with pytest.raises(InferenceServerException) as info:
        client(clients_env).infer(model, ins, outputs=outs, headers=dict(JSON))
    err = info.value
    assert err.status() == status
    assert str(err) == f"[{status}] {err.message()}"  # printable: no TypeError
    assert text in err.message()


def test_reused_headers_dict_trap(clients_env: ClientsEnv) -> None:
    """tritonclient writes Inference-Header-Content-Length into the headers dict it is
    given: reusing one dict sends a stale binary header with a later JSON request (the
    README's advice: a fresh dict per call)."""
    c = client(clients_env)
    shared = dict(JSON)
    c.infer("org/dev-fraud", inputs(True), headers=shared)
    assert "Inference-Header-Content-Length" in shared
    with pytest.raises(InferenceServerException) as info:
        c.infer("org/dev-fraud", inputs(False), headers=shared)
    assert info.value.status() == "400"
    c.infer("org/dev-fraud", inputs(False), headers=dict(JSON))  # a fresh dict works


async def test_aio_client(clients_env: ClientsEnv) -> None:
    c = triton_aio.InferenceServerClient(clients_env.router)
    try:
        assert await c.is_server_live() is True
        assert await c.is_server_ready() is True
        assert (await c.get_server_metadata())["name"] == "model-router"
        assert await c.is_model_ready("fraud-xgb") is True
        assert (await c.get_model_config("org/dev-fraud"))["name"] == "org/dev-fraud"
        for binary in (False, True):
            result = await c.infer("fraud-xgb", inputs(binary), outputs=outputs(binary),
                                   headers=None if binary else dict(JSON))  # fmt: skip
            assert_echoed(result)
        for compression in ("gzip", "deflate"):
            result = await c.infer("org/dev-fraud", inputs(True),
                                   request_compression_algorithm=compression)  # fmt: skip
            assert result.get_response()["model_name"] == "org/dev-fraud"
        with pytest.raises(InferenceServerException) as info:
            await c.infer("unknown-model", inputs(False), headers=dict(JSON))
        assert str(info.value) == "[404] model 'unknown-model' is not registered"
    finally:
        await c.close()


async def test_other_model_level_paths_reach_the_models_server(clients_env: ClientsEnv) -> None:
    """Triton's generate and trace extensions are routed to the model's deployment (the
    dev server tags every answer it gives, found route or not)."""
    base = f"{clients_env.stack.url}/v2/models/org/dev-fraud"
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        for method, suffix in (("POST", "/generate"), ("POST", "/generate_stream"),
                               ("GET", "/trace/setting"), ("POST", "/versions/1/generate")):  # fmt: skip
            r = await http.request(method, base + suffix, json={"text_input": "hi"})
            assert r.headers.get("x-served-by") == "dev-fraud", (suffix, r.status_code, r.text)
            assert clients_env.dev.received[-1].path == "/v2/models/org/dev-fraud" + suffix
