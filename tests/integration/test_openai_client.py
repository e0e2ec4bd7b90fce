"""The official OpenAI Python SDK, unmodified, through Envoy and the router, in front of
llm-d-inference-sim (echo mode: answers repeat the prompt, so router and direct answers
can be compared)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.integration.conftest import ClientsEnv
from tests.support import http_error

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "hello from the client tests"}]


def sync_client(env: ClientsEnv, *, direct: bool = False) -> openai.OpenAI:
    base = env.sim.url if direct else env.stack.url
    return openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)


def async_client(env: ClientsEnv) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=env.stack.url + "/v1", api_key="unused", max_retries=0)


def test_models_list_and_retrieve(clients_env: ClientsEnv) -> None:
    client = sync_client(clients_env)
    # OpenAI-protocol models with a routable deployment, from the router's registry.
    assert [m.id for m in client.models.list()] == ["chat-small", "org/llm"]
    model = client.models.retrieve("org/llm")
    assert (model.id, model.object, model.owned_by) == ("org/llm", "model", "model-router")
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("fraud-xgb")  # a KServe model: not an OpenAI model here
    assert info.value.code == "model_not_found"
    assert "fraud-xgb" in info.value.message


def test_chat_plain_matches_the_backend_directly(clients_env: ClientsEnv) -> None:
    via = sync_client(clients_env).chat.completions.create(model="chat-small", messages=HELLO)
    direct = sync_client(clients_env, direct=True).chat.completions.create(
        model="chat-small", messages=HELLO
    )
    assert via.choices[0].message.content == direct.choices[0].message.content
    assert via.choices[0].message.content == HELLO[0]["content"]
    assert via.usage is not None and via.usage.completion_tokens > 0


def test_chat_streamed_arrives_in_chunks(clients_env: ClientsEnv) -> None:
    stream = sync_client(clients_env).chat.completions.create(
        model="org/llm", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == HELLO[0]["content"]
    assert len([c for c in chunks if c.choices]) > 1  # streamed, not one buffered answer
    assert chunks[-1].usage is not None


def test_completions_embeddings_and_responses(clients_env: ClientsEnv) -> None:
    client = sync_client(clients_env)
    done = client.completions.create(model="chat-small", prompt="say this back", max_tokens=16)
    assert done.choices[0].text == "say this back"
    emb = client.embeddings.create(model="chat-small", input=["one", "two"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0
    resp = client.responses.create(model="chat-small", input="respond in kind",
                                   max_output_tokens=32)  # fmt: skip
    assert resp.output_text == "respond in kind"
    items = client.responses.create(
        model="org/llm",
        instructions="be brief",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "item input"}]}],
    )
    assert items.output_text == "item input"


def test_with_raw_response_shows_the_routing_headers(clients_env: ClientsEnv) -> None:
    raw = sync_client(clients_env).chat.completions.with_raw_response.create(
        model="chat-small", messages=HELLO, extra_headers={"x-model-version": "1"}
    )
    assert raw.status_code == 200
    assert raw.headers["x-model-router-model"] == "chat-small"
    assert raw.headers["x-model-router-version"] == "1"
    assert raw.headers["x-model-router-deployment"] == "sim-chat"
    assert raw.headers["x-model-router-endpoint"] == clients_env.sim.address
    assert raw.parse().choices[0].message.content == HELLO[0]["content"]


@pytest.mark.parametrize(
    ("call", "exc", "code", "param"),
    [
        ({"model": "gpt-nope", "messages": HELLO}, openai.NotFoundError, "model_not_found",
         "/model"),
        ({"model": "chat-small", "messages": HELLO, "max_tokens": 65},
         openai.UnprocessableEntityError, "spec_violation", "/max_tokens"),
        ({"model": "chat-small", "messages": HELLO, "logit_bias": {"1": 2}},
         openai.UnprocessableEntityError, "spec_violation", "/logit_bias"),
        ({"model": "chat-small", "messages": [{"role": "robot", "content": "x"}]},
         openai.BadRequestError, "invalid_request", "/messages/0/role"),
        ({"model": "chat-small", "messages": HELLO, "extra_headers": {"x-model-version": "9"}},
         openai.NotFoundError, "version_not_found", None),
        ({"model": "chat-small", "messages": HELLO,
          "extra_headers": {"x-model-capabilities": "no operator"}},
         openai.BadRequestError, "invalid_request", "x-model-capabilities"),
    ],
)  # fmt: skip
def test_errors_map_to_sdk_exceptions(
    clients_env: ClientsEnv,
    call: dict[str, object],
    exc: type[openai.APIStatusError],
    code: str,
    param: str | None,
) -> None:
    with pytest.raises(exc) as info:
        sync_client(clients_env).chat.completions.create(**call)  # type: ignore[call-overload]
    err = info.value
    assert (err.code, err.param) == (code, param)
    assert err.type in ("invalid_request_error", "server_error")
    assert err.response.headers["x-model-router-error"] == code
    # The message reads once: no rule or field name repeated in front of it.
    assert err.message and not err.message.startswith((f"{param}:", "max_tokens:"))


def test_responses_spec_and_errors(clients_env: ClientsEnv) -> None:
    client = sync_client(clients_env)
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.responses.create(model="chat-small", input="x", max_output_tokens=65)
    assert (info.value.code, info.value.param) == ("spec_violation", "/max_output_tokens")
    assert "max_output_tokens 65 is over this model's limit of 64" in info.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="chat-small", input=[{"role": "tool", "content": "x"}])
    assert (bad.value.code, bad.value.param) == ("invalid_request", "/input/0/role")
    with pytest.raises(openai.UnprocessableEntityError) as many:
        client.responses.create(model="chat-small", input=[HELLO[0]] * 9)
    assert (many.value.code, many.value.param) == ("spec_violation", "/input")


async def test_async_client_chat_and_stream(clients_env: ClientsEnv) -> None:
    client = async_client(clients_env)
    done = await client.chat.completions.create(model="chat-small", messages=HELLO)
    assert done.choices[0].message.content == HELLO[0]["content"]
    stream = await client.chat.completions.create(model="chat-small", messages=HELLO,
                                                  stream=True)  # fmt: skip
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == HELLO[0]["content"]
    assert [m.id async for m in client.models.list()] == ["chat-small", "org/llm"]
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(model="nope", messages=HELLO)
    assert (info.value.code, info.value.param) == ("model_not_found", "/model")
    await client.close()


async def test_models_endpoint_methods_and_field_header(clients_env: ClientsEnv) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        r = await http.post(clients_env.stack.url + "/v1/models", json={})
        assert r.status_code == 405 and http_error(r)["type"] == "method_not_allowed"
        body = {"model": "chat-small", "messages": [{"role": "user", "content": 5}]}
        r = await http.post(clients_env.stack.url + "/v1/chat/completions", json=body)
        assert r.status_code == 400
        assert r.headers["x-model-router-error-field"] == "/messages/0/content"
        # A duplicated key whose pointer needs percent-encoding in the header (UTF-8).
        dup = '{"model": "chat-small", "a b%\u00e9/": 1, "a b%\u00e9/": 2, "messages": []}'
        r = await http.post(clients_env.stack.url + "/v1/chat/completions", content=dup,
                            headers={"content-type": "application/json"})  # fmt: skip
        assert r.status_code == 400
        assert r.headers["x-model-router-error-field"] == "/a%20b%25%C3%A9~1"
        assert r.json()["error"]["param"] == "/a b%\u00e9~1"
