"""The gateway inside the ext_proc flow: 401 before anything else, 403 on the body's
model, the key's default priority class, credentials removed from the routed request,
quotas counted only for requests that are routed, and the config's problems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from extproc.control.errors import ConfigError
from extproc.control.gateway.keys import entry_for
from tests.unit.core.test_flow import CHAT_PATH, JSON, error_of
from tests.unit.helpers import BASIC, run_flow, state_for

KEY = "mr-unit-test-key"


def _routes(tmp_path: Path, extra: str = "", key: dict[str, object] | None = None) -> str:
    keys = tmp_path / "keys.yaml"
    entry = {**entry_for(KEY, name="ci", tenant="acme"), **(key or {})}
    keys.write_text(json.dumps({"keys": [entry]}))
    return (
        f'auth: {{keys_file: "{keys}"}}\n'
        "tenants:\n"
        "  acme: {models: [chat-small], default_class: sheddable,\n"
        "         quotas: {requests_per_minute: 2}}\n" + extra + BASIC
    )


def _chat(model: str = "chat-small") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()


def test_no_key_is_401_before_the_body_is_read(tmp_path: Path) -> None:
    state = state_for(_routes(tmp_path))
    flow, [resp] = run_flow(state, "POST", CHAT_PATH, JSON, _chat())
    status, err = error_of(resp, CHAT_PATH)
    assert (status, err["type"]) == (401, "unauthenticated")
    assert not flow.outcome.used_body


def test_routed_request_loses_its_credentials_and_takes_the_keys_class(tmp_path: Path) -> None:
    state = state_for(_routes(tmp_path))
    creds = [("authorization", f"Bearer {KEY}")]
    flow, out = run_flow(state, "POST", CHAT_PATH, JSON + creds, _chat())
    resp = out[-1]
    assert resp is not None and flow.outcome.decision is not None
    removed = resp.request_body.response.header_mutation.remove_headers
    assert set(removed) >= {"authorization", "x-api-key"}
    assert flow.outcome.priority == "sheddable"
    assert (flow.outcome.tenant, flow.outcome.credential) == ("acme", "API key 'ci'")
    # An explicit priority header still wins.
    flow, _ = run_flow(state, "POST", CHAT_PATH,
                       JSON + creds + [("x-model-router-priority", "critical")], _chat())  # fmt: skip
    assert flow.outcome.priority == "critical"
    # Two routed: the third is over the tenant's 2 requests per minute.
    flow, out = run_flow(state, "POST", CHAT_PATH, JSON + creds, _chat())
    resp = out[-1]
    assert resp is not None
    status, err = error_of(resp, CHAT_PATH)
    assert (status, err["type"]) == (429, "rate_limit_exceeded")


def test_a_model_outside_the_tenants_is_403_and_counts_no_quota(tmp_path: Path) -> None:
    state = state_for(_routes(tmp_path))
    creds = [("x-api-key", KEY)]
    for _ in range(3):
        _, out = run_flow(state, "POST", "/v2/models/resnet50/infer", JSON + creds, b"{}")
        status, err = error_of(out[-1], "/v2/models/resnet50/infer")  # type: ignore[arg-type]
        assert (status, err["type"]) == (403, "model_not_allowed")
    flow, _ = run_flow(state, "POST", CHAT_PATH, JSON + creds, _chat())
    assert flow.outcome.decision is not None


def test_config_problems_name_the_place(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        state_for(_routes(tmp_path, key={"tenant": "nobody", "default_class": "vip"}))
    text = str(exc.value)
    assert "keys.0.tenant: 'nobody' is not a tenant" in text
    assert "keys.0.default_class: 'vip' is not a priority class" in text
    with pytest.raises(ConfigError, match="needs failure_mode: closed"):
        state_for(_routes(tmp_path, extra="failure_mode: open\n"))
    with pytest.raises(ConfigError, match="tenants need auth"):
        state_for("tenants: {acme: {}}\n" + BASIC)
