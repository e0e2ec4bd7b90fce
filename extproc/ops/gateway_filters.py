"""The gateway's pieces of Envoy's bootstrap (README "Gateway"), rendered only when the
routing file has ``auth``:

* ``jwt_authn`` (first in the chain): a request whose ``Authorization`` is a bearer token
  shaped like a JWT (three base64url parts) must carry a valid one, verified against the
  local JWKS (issuer, audiences, clock skew); Envoy answers 401 itself otherwise (mapped
  to JSON in the path's shape). The verified payload goes to the router as metadata
  (ext_proc and ext_authz forward the namespace), where the tenant claim is read; the
  token itself is removed before the request goes upstream. Other requests (API keys,
  none) pass to the router, which decides.
* ``ext_authz`` (before ext_proc), to the router's own gRPC ``Authorization`` service:
  on natively routed requests only (the routes turn it off everywhere ext_proc runs, as
  the flow checks the same there). Fail-closed: a router that does not answer is a 503.
* ``json_to_metadata`` response rules: a JSON response's ``usage`` token counts into
  metadata, which the access log carries back to the router (quota reconciliation).
"""

from __future__ import annotations

import json
from pathlib import Path

from extproc.control.schema import Config
from extproc.core.gateway import JWT_NAMESPACE, JWT_PAYLOAD_KEY

JWT_PROVIDER = "model_router"
JWT_SHAPE = r"(?i)bearer\s+[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\s*"
USAGE_NAMESPACE = "model_router.usage"


def _q(value: str) -> str:
    return json.dumps(value)


def jwks_path(config: Config, routing_file: Path | None) -> Path | None:
    """The JWKS file's absolute path (``auth.jwt.jwks_file`` is relative to the routing
    file; Envoy reads it at start-up)."""
    if config.auth is None or config.auth.jwt is None:
        return None
    base = routing_file.parent if routing_file is not None else Path.cwd()
    return (base / config.auth.jwt.jwks_file).resolve()


def jwt_filter(config: Config, jwks: Path | None) -> str:
    if config.auth is None or config.auth.jwt is None or jwks is None:
        return ""
    jwt = config.auth.jwt
    audiences = ", ".join(_q(a) for a in jwt.audiences)
    return (
        '          # JWTs (README "Gateway"): only bearer tokens shaped like a JWT must verify\n'
        "          # here; API keys and requests without credentials go on to the router.\n"
        "          - name: envoy.filters.http.jwt_authn\n"
        "            typed_config:\n"
        '              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3'
        ".JwtAuthentication\n"
        "              providers:\n"
        f"                {JWT_PROVIDER}:\n"
        f"                  issuer: {_q(jwt.issuer)}\n"
        f"                  audiences: [{audiences}]\n"
        f"                  local_jwks: {{filename: {_q(str(jwks))}}}\n"
        f"                  clock_skew_seconds: {jwt.clock_skew_s}\n"
        "                  forward: false\n"
        f"                  payload_in_metadata: {JWT_PAYLOAD_KEY}\n"
        '                  from_headers: [{name: authorization, value_prefix: "Bearer "}]\n'
        "              rules:\n"
        "              - match:\n"
        "                  prefix: /\n"
        "                  headers:\n"
        "                  - name: authorization\n"
        f"                    string_match: {{safe_regex: {{regex: {_q(JWT_SHAPE)}}}}}\n"
        f"                requires: {{provider_name: {JWT_PROVIDER}}}\n"
    )


def ext_authz_filter(config: Config) -> str:
    if config.auth is None:
        return ""
    return (
        "          # Natively routed requests: credentials, model rights and tenant quotas\n"
        "          # checked by the router (off on every route ext_proc runs on).\n"
        "          - name: envoy.filters.http.ext_authz\n"
        "            typed_config:\n"
        '              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3'
        ".ExtAuthz\n"
        "              transport_api_version: V3\n"
        "              grpc_service:\n"
        "                envoy_grpc: {cluster_name: ext_proc}\n"
        f"                timeout: {config.envoy.message_timeout_ms / 1000:.3f}s\n"
        "              failure_mode_allow: false\n"
        "              status_on_error: {code: ServiceUnavailable}\n"
        f"              metadata_context_namespaces: [{JWT_NAMESPACE}]\n"
    )


def response_rules(config: Config) -> str:
    if config.auth is None:
        return ""
    lines = ["              response_rules:\n", "                rules:\n"]
    for key in ("prompt_tokens", "completion_tokens"):
        lines.append(f"                - selectors: [{{key: usage}}, {{key: {key}}}]\n")
        lines.append(
            f"                  on_present: {{metadata_namespace: {USAGE_NAMESPACE}, "
            f"key: {key}, type: NUMBER}}\n"
        )
    return "".join(lines)


def forwarded_namespaces(config: Config) -> str:
    names = ['"envoy.lb.subset_hint"']
    if config.auth is not None and config.auth.jwt is not None:
        names.append(_q(JWT_NAMESPACE))
    return ", ".join(names)
