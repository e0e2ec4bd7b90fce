"""JWTs through a real Envoy: ``jwt_authn`` verifies them against a local JWKS (a key
pair generated here), the tenant claim reaches the router as metadata on both paths,
and a token that does not verify is Envoy's 401, as JSON in the path's shape, with
``WWW-Authenticate``; it never reaches a model server or a log."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from extproc.dev.model_servers import ModelServer
from extproc.ops.stack import Stack
from tests.integration.conftest import StackFactory
from tests.integration.test_gateway_auth import (  # noqa: F401
    SPECS,
    TENSOR,
    chat,
    fleet,
    served,
    servers,
)
from tests.support import eventually, http_error

pytestmark = pytest.mark.integration

ISSUER, AUDIENCE = "https://issuer.test", "model-router-test"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Signer:
    """An RSA key pair, its JWKS, and RS256 tokens signed with it."""

    def __init__(self, kid: str = "k1") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        pub = self.key.public_key().public_numbers()

        def num(n: int) -> str:
            return _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))

        return {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid,
                          "n": num(pub.n), "e": num(pub.e)}]}  # fmt: skip

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": now,
                   "exp": now + 300, **claims}  # fmt: skip
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
        sig = self.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{_b64(sig)}"


@pytest.fixture
async def jwt_stack(
    servers: dict[str, ModelServer],  # noqa: F811
    make_stack: StackFactory,
    tmp_path: Path,
) -> tuple[Stack, Signer]:
    signer = Signer()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(signer.jwks()))
    routes = f"""
auth:
  jwt: {{issuer: "{ISSUER}", audiences: ["{AUDIENCE}"], jwks_file: "{jwks}",
         tenant_claim: org, clock_skew_s: 5}}
tenants:
  acme: {{models: [chat, tensor]}}
  tiny: {{models: [chat], quotas: {{requests_per_minute: 1}}}}
""" + fleet(servers)
    return await make_stack(routes), signer


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_a_verified_jwt_names_the_tenant_on_both_paths(
    jwt_stack: tuple[Stack, Signer],
    servers: dict[str, ModelServer],  # noqa: F811
    client: httpx.AsyncClient,
) -> None:
    stack, signer = jwt_stack
    token = signer.token(org="acme")
    r = await client.post(stack.url + "/v1/chat/completions", json=chat(), headers=bearer(token))
    assert r.status_code == 200, r.text
    r = await client.post(stack.url + "/v2/models/tensor/infer", json=TENSOR,
                          headers=bearer(token))  # fmt: skip
    assert r.status_code == 200, r.text
    for server in (servers["chat"], servers["tensor"]):
        assert server.received and all("authorization" not in x.headers for x in server.received)
    # The tenant's models (403) and quotas (429) apply to JWT callers too.
    r = await client.post(stack.url + "/v1/chat/completions", json=chat("decoy"),
                          headers=bearer(token))  # fmt: skip
    assert r.status_code == 403 and http_error(r)["type"] == "model_not_allowed", r.text
    tiny = bearer(signer.token(org="tiny"))
    codes = [
        (
            await client.post(stack.url + "/v1/chat/completions", json=chat(), headers=tiny)
        ).status_code
        for _ in range(3)
    ]
    assert codes.count(429) >= 1 and set(codes) <= {200, 429}, codes
    # A tenant the routing file does not know (no "*" entry) may use nothing.
    r = await client.post(stack.url + "/v1/chat/completions", json=chat(),
                          headers=bearer(signer.token(org="initech")))  # fmt: skip
    assert r.status_code == 403, r.text

    async def counted() -> bool:
        port = stack.config.listener.metrics_port
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        assert 'path="native",result="allowed",tenant="acme"' in text
        assert 'path="ext_proc",result="rate_limit_exceeded",tenant="tiny"' in text
        return True

    await eventually(counted)


async def test_a_jwt_that_does_not_verify_is_envoys_401_as_json(
    jwt_stack: tuple[Stack, Signer],
    servers: dict[str, ModelServer],  # noqa: F811
    client: httpx.AsyncClient,
) -> None:
    stack, signer = jwt_stack
    stranger = Signer()  # same kid, another key: a bad signature
    now = int(time.time())
    bad = {
        "expired": signer.token(org="acme", exp=now - 60, iat=now - 600),
        "wrong issuer": signer.token(org="acme", iss="https://evil.test"),
        "wrong audience": signer.token(org="acme", aud="someone-else"),
        "bad signature": stranger.token(org="acme"),
        "not yet valid": signer.token(org="acme", nbf=now + 600),
    }
    for what, token in bad.items():
        for path, body in [("/v1/chat/completions", chat("decoy")),
                           ("/v2/models/tensor/infer", TENSOR)]:  # fmt: skip
            r = await client.post(stack.url + path, json=body, headers=bearer(token))
            assert r.status_code == 401, (what, path, r.status_code, r.text)
            assert r.headers["content-type"] == "application/json"
            err = http_error(r)
            assert err["type"] == "unauthenticated", (what, err)
            assert "JWT" in err["message"], err
            assert r.headers["www-authenticate"].startswith("Bearer"), r.headers
    # Verified, but no tenant claim: the router's own 401.
    r = await client.post(stack.url + "/v1/chat/completions", json=chat(),
                          headers=bearer(signer.token()))  # fmt: skip
    assert r.status_code == 401 and "'org' claim" in http_error(r)["message"], r.text
    assert served(servers["decoy"]) == [] and served(servers["tensor"]) == []
    logs = (stack.workdir / "router.log").read_text() + (stack.workdir / "envoy.log").read_text()
    for token in bad.values():
        assert token.rsplit(".", 1)[1] not in logs
