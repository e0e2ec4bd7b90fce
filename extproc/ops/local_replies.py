"""Envoy's own error replies (``local_reply_config``), in the error shape of the path's
protocol, rendered into the bootstrap from :mod:`extproc.core.error_shapes`.

Envoy answers some requests itself: the router too slow (504) or unreachable (503),
a body over the limit (413), no healthy endpoint, no route table yet, an upstream
failure, and its own protocol errors. Each kind becomes one mapper per protocol: the
OpenAI and KServe v2 ones select the path with a CEL filter on ``request.url_path``
(the same path sets :func:`extproc.core.protocols.error_protocol` uses), the generic
one takes what is left. Every mapper adds ``x-model-router-error: <type>``. Mapper 1
passes through the router's ImmediateResponses and the routes' direct responses,
which already have their shape and headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from extproc.core.error_shapes import ERROR_HEADER, error_document
from extproc.core.protocols.openai import PATHS_REGEX
from extproc.core.request import ProtocolName

_CEL = "envoy.access_loggers.extension_filters.cel"
_CEL_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
PROTOCOL_PATHS: dict[ProtocolName, str] = {
    "openai": f"request.url_path.matches('{PATHS_REGEX}')",
    "kserve_v2": "request.url_path == '/v2' || request.url_path.startsWith('/v2/')",
}
"""CEL for the paths whose errors take that protocol's shape (the rest: generic)."""


def _cel(expression: str) -> dict[str, Any]:
    config = {"@type": _CEL_TYPE, "expression": expression}
    return {"extension_filter": {"name": _CEL, "typed_config": config}}


def _status_is(op: str, code: int) -> dict[str, Any]:
    runtime_key = f"model_router.lr_{op.lower()}_{code}"
    return {"status_code_filter": {"comparison": {
        "op": op, "value": {"default_value": code, "runtime_key": runtime_key}}}}  # fmt: skip


@dataclass(frozen=True, slots=True)
class LocalReply:
    """One kind of reply Envoy makes itself, and what it becomes."""

    why: str
    filter: dict[str, Any]
    type: str
    message: str
    status: int
    """The status the client gets (for OpenAI's error category)."""
    set_status: bool = False
    """Replace Envoy's status with ``status``."""


def local_replies(max_body_bytes: int, max_request_headers: int = 100) -> list[LocalReply]:
    return [
        LocalReply(
            "a JWT that does not verify (jwt_authn: bad signature, expired, wrong issuer or "
            "audience): Envoy's 401 with WWW-Authenticate (403 for a wrong audience, made "
            "401: a token for another service is not a credential here)",
            _cel("response.code_details.startsWith('jwt_authn_access_denied')"),
            "unauthenticated", "the JWT is not valid: %LOCAL_REPLY_BODY%", 401,
            set_status=True),
        LocalReply(
            "the native-route authorization check (ext_authz) could not reach the router: "
            "fail-closed 503",
            _cel("response.code_details.startsWith('ext_authz_error')"),
            "router_unavailable", "model router unavailable", 503, set_status=True),
        LocalReply(
            "ext_proc per-message timeout (router too slow): Envoy answers 504, empty body, "
            "details ext_proc_error_per-message_timeout_exceeded",
            _cel("response.code_details.startsWith('ext_proc_error_per-message_timeout')"),
            "router_timeout", "model router did not answer in time", 504),
        LocalReply(
            "ext_proc stream failure (router down: connection refused, reset, gRPC error), "
            "failure_mode_allow false: Envoy answers 500, empty body; we answer 503",
            _cel("response.code_details.startsWith('ext_proc_error')"),
            "router_unavailable", "model router unavailable", 503, set_status=True),
        LocalReply(
            "body over the buffer limit (content-length or chunked): Envoy's 413 "
            "(the router's own 413s passed mapper 1)",
            _status_is("EQ", 413),
            "payload_too_large", f"request body exceeds {max_body_bytes} bytes", 413),
        LocalReply(
            "no healthy endpoint left in the deployment's cluster (natively routed "
            "requests; health checks or outlier detection ejected all)",
            {"response_flag_filter": {"flags": ["UH"]}},
            "no_healthy_deployment", "no healthy endpoint", 503),
        LocalReply(
            "no route: no route table from the router yet (Envoy started without one; "
            "it waits initial_fetch_timeout, then answers)",
            {"response_flag_filter": {"flags": ["NR"]}},
            "router_unavailable", "no routes from the model router yet", 503, set_status=True),
        LocalReply(
            "a model server that did not answer in time: the model's first-byte timeout "
            "(per_try_timeout) or its total timeout; Envoy's 504, flag UT",
            {"response_flag_filter": {"flags": ["UT"]}},
            "upstream_timeout", "the model server did not answer in time", 504),
        LocalReply(
            "upstream failures: UF connect failure, UO overflow, URX retries exhausted, "
            "UC/UR resets, NC no cluster",
            {"response_flag_filter": {"flags": ["UF", "UO", "URX", "UC", "UR", "NC"]}},
            "upstream_unavailable", "%LOCAL_REPLY_BODY%", 503),
        LocalReply(
            "too many request headers, or too large (codec, HTTP/1.1): Envoy's 431",
            _status_is("EQ", 431),
            "request_headers_too_large",
            f"more than {max_request_headers} request headers, or over 60 KiB of them", 431),
        LocalReply(
            "anything else Envoy answers itself with a server error",
            _status_is("GE", 500), "proxy_error", "%LOCAL_REPLY_BODY%", 500),
        LocalReply(
            "anything else Envoy answers itself (400 codec errors, 431, ...)",
            _status_is("GE", 0), "proxy_error", "%LOCAL_REPLY_BODY%", 400),
    ]  # fmt: skip


def _mapper(reply: LocalReply, protocol: ProtocolName) -> dict[str, Any]:
    flt = reply.filter
    if protocol in PROTOCOL_PATHS:
        flt = {"and_filter": {"filters": [flt, _cel(PROTOCOL_PATHS[protocol])]}}
    body = error_document(protocol, status=reply.status, type=reply.type, message=reply.message)
    mapper: dict[str, Any] = {"filter": flt}
    if reply.set_status:
        mapper["status_code"] = reply.status
    mapper["headers_to_add"] = [
        {"header": {"key": ERROR_HEADER, "value": reply.type},
         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
    ]  # fmt: skip
    mapper["body_format_override"] = {"json_format": body}
    return mapper


PASS_THROUGH = _cel(
    "response.code_details.startsWith('model_router_') "
    "|| response.code_details == 'direct_response' "
    "|| response.code_details == 'ext_authz_denied'"
)


def _item(mapper: dict[str, Any], pad: str) -> list[str]:
    """``mapper`` as one YAML list item, indented by ``pad``."""
    text = yaml.safe_dump(mapper, default_flow_style=False, sort_keys=False, width=1000)
    lines = text.rstrip("\n").split("\n")
    return [f"{pad}- {lines[0]}", *(f"{pad}  {line}" for line in lines[1:])]


def render_mappers(max_body_bytes: int, max_request_headers: int = 100, indent: int = 12) -> str:
    """The ``mappers:`` block (YAML, with a comment per kind of reply)."""
    pad = " " * indent
    lines = [f"{pad}mappers:"]
    keep = {
        "filter": PASS_THROUGH,
        "body_format_override": {
            "text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"},
            "content_type": "application/json",
        },
    }
    lines.append(
        f"{pad}# 1. The router's ImmediateResponses, the routes' direct responses and the "
        "router's ext_authz denials."
    )
    lines += _item(keep, pad)
    n = 2
    for reply in local_replies(max_body_bytes, max_request_headers):
        lines.append(f"{pad}# {n}. {reply.why}")
        n += 1
        for protocol in ("openai", "kserve_v2", "generic"):
            lines += _item(_mapper(reply, protocol), pad)
    return "\n".join(lines) + "\n"
