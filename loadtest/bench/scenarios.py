"""What one bench run measures: the setups, the run's options, bodies and config files.

The :data:`SETUPS` table (plus the ``--validation`` setups and the ``--baselines``
direct runs), :class:`Options` (the parsed command line), :func:`plan` (the order the
setups run in), the request bodies k6 sends, the router's routing file and the direct
Envoy bootstrap (the shipped one minus ext_proc).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

ROUTERS = ("model-router", "minimal", "both")
MINIMAL_SUFFIX = "_min"

CHAT_MODEL = "bench-chat"
KSERVE_MODEL = "bench-kserve"
NATIVE_KSERVE_MODEL = "bench-native-kserve"
NATIVE_CHAT_MODEL = "bench-native-chat"
CHAT_PATH = "/v1/chat/completions"
KSERVE_PATH = f"/v2/models/{KSERVE_MODEL}/infer"
NATIVE_KSERVE_PATH = f"/v2/models/{NATIVE_KSERVE_MODEL}/infer"
MODES = ("fixed", "max")


@dataclass(frozen=True, slots=True)
class Setup:
    name: str
    routed: bool
    path: str
    body: str
    """Key into the bodies written by :func:`write_bodies`."""
    baseline: str
    """The direct setup with the same path and body (added latency against it, if run)."""
    note: str
    minimal: bool = False
    """Run with the minimal probe (``loadtest/minimal_extproc.py``) instead of the router."""
    uds: bool = False
    """Envoy reaches the router's ext_proc (and xDS) over a Unix domain socket."""
    native: bool = False
    """Envoy routes these requests itself (no ext_proc hop); the router only serves xDS."""
    gateway: str = ""
    """``local`` or ``redis``: the requests carry an API key of a tenant with request and
    concurrency quotas (README "Gateway"), kept in-process or shared through Redis."""

    def as_minimal(self) -> Setup:
        return replace(
            self,
            name=self.name + MINIMAL_SUFFIX,
            note=self.note + " (minimal probe)",
            minimal=True,
        )


SETUPS = (
    Setup("direct", False, CHAT_PATH, "chat_4k", "direct", "Envoy -> nginx, 4 KiB chat body"),
    Setup(
        "headers", True, KSERVE_PATH, "kserve_small", "direct_small", "KServe path, headers only"
    ),
    Setup("body", True, CHAT_PATH, "chat_4k", "direct", "OpenAI chat, 4 KiB body to router"),
    Setup("body_256k", True, CHAT_PATH, "chat_256k", "direct_256k", "OpenAI chat, 256 KiB body"),
    Setup("native_kserve", True, NATIVE_KSERVE_PATH, "native_kserve_small", "direct_small",
          "KServe path, no spec: routed by Envoy (native)", native=True),
    Setup("native_openai", True, CHAT_PATH, "native_chat_1k", "direct_1k",
          "OpenAI chat 1 KiB, model read by Envoy (native: true)", native=True),
    Setup("headers_gateway", True, KSERVE_PATH, "kserve_small", "direct_small",
          "KServe path, headers only + API key + tenant quotas (in-process)", gateway="local"),
    Setup("headers_gateway_redis", True, KSERVE_PATH, "kserve_small", "direct_small",
          "KServe path, headers only + API key + tenant quotas shared through Redis",
          gateway="redis"),
    Setup("native_kserve_gateway", True, NATIVE_KSERVE_PATH, "native_kserve_small",
          "direct_small", "KServe native route + API key + quotas (Envoy ext_authz)",
          native=True, gateway="local"),
    Setup("headers_uds", True, KSERVE_PATH, "kserve_small", "direct_small",
          "KServe path, headers only, ext_proc over a Unix socket", uds=True),
    Setup("body_uds", True, CHAT_PATH, "chat_4k", "direct",
          "OpenAI chat, 4 KiB body to router over a Unix socket", uds=True),
)  # fmt: skip
VALIDATION_SETUPS = (
    Setup("valid_1k", True, CHAT_PATH, "valid_1k", "direct",
          "OpenAI chat 1 KiB: JSON Schema + limits + 2 content rules"),
    Setup("valid_4k", True, CHAT_PATH, "valid_4k", "direct",
          "OpenAI chat 4 KiB: JSON Schema + limits + 2 content rules"),
    Setup("valid_64k", True, CHAT_PATH, "valid_64k", "direct",
          "OpenAI chat 64 KiB: JSON Schema + limits + 2 content rules"),
)  # fmt: skip
ALL_SETUPS = SETUPS + VALIDATION_SETUPS
DEFAULT_SETUPS = ("direct", "headers", "body", "body_256k")
VALID_MODEL = "bench-valid"
VALID_SPEC = {
    "openai": {
        "json_schema": {
            "type": "object",
            "properties": {
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "n": {"type": "integer", "minimum": 1, "maximum": 4},
                "stream": {"type": "boolean"},
                "stop": {
                    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
                },
            },
        },
        "max_messages": 16,
        "max_prompt_chars": 100000,
        "max_tokens": 4096,
        "forbidden_params": ["logit_bias"],
    }
}
VALID_RULES = [  # both evaluated in full, neither matches: the worst case for rule cost
    {"name": "tools-to-large", "when": {"model": VALID_MODEL, "any": [{"has": ["tools"]},
     {"max_tokens": {"gt": 1024}}]}, "route": {"model": CHAT_MODEL}},
    {"name": "medical", "when": {"model": VALID_MODEL, "last_user_message":
     {"keywords": ["patient", "diagnos", "symptom"]}},
     "route": {"capabilities": "domain=medical"}},
]  # fmt: skip
BASELINES = (
    Setup("direct_small", False, KSERVE_PATH, "kserve_small", "direct_small", "direct, small"),
    Setup("direct_256k", False, CHAT_PATH, "chat_256k", "direct_256k", "direct, 256 KiB"),
    Setup("direct_1k", False, CHAT_PATH, "native_chat_1k", "direct_1k", "direct, 1 KiB chat"),
)
NATIVE_BASELINES = {"native_kserve": "direct_small", "native_openai": "direct_1k",
                    "native_kserve_gateway": "direct_small"}  # fmt: skip
GATEWAY_TENANT = "bench"
GATEWAY_QUOTAS = {"requests_per_minute": 1_000_000_000, "concurrent_requests": 100_000}
"""Never reached: the rows measure the cost of checking quotas, not of refusing."""
"""Native rows are judged against Envoy-direct with the same body: run with them."""


@dataclass(slots=True)
class Options:
    duration_s: float
    warmup_iters: int
    vus: int
    rate: int
    workers: int
    envoy_concurrency: int
    backends: int
    baselines: bool
    setups: list[str]
    profile_dir: Path | None
    profile_native: bool
    keep: bool
    json_path: Path | None
    router: str = "model-router"
    pin_cpu: bool = False
    scenarios: tuple[str, ...] = ()
    """Scheduling scenarios on simulators (``--scenarios``) instead of the setups."""
    quick: bool = False


def _chat_body(size: int, model: str = CHAT_MODEL) -> bytes:
    """A chat completion request of exactly ``size`` bytes."""
    words = ("the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while")
    system = "You are a helpful assistant. Answer briefly."

    def build(filler: str) -> bytes:
        doc = {
            "model": model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": filler},
            ],
            "max_tokens": 16,
            "temperature": 0,
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    empty = len(build(""))
    text = " ".join(words[i % len(words)] for i in range(size // 4))[: size - empty]
    body = build(text)
    assert len(body) == size, (len(body), size)
    return body


def write_bodies(workdir: Path) -> dict[str, Path]:
    kserve = {
        "id": "bench",
        "inputs": [{"name": "input0", "shape": [1, 8], "datatype": "FP32", "data": list(range(8))}],
    }
    bodies = {
        "kserve_small": json.dumps(kserve, separators=(",", ":")).encode(),
        "chat_4k": _chat_body(4 * 1024),
        "chat_256k": _chat_body(256 * 1024),
        "valid_1k": _chat_body(1024, VALID_MODEL),
        "valid_4k": _chat_body(4 * 1024, VALID_MODEL),
        "valid_64k": _chat_body(64 * 1024, VALID_MODEL),
        "native_kserve_small": json.dumps(kserve, separators=(",", ":")).encode(),
        "native_chat_1k": _chat_body(1024, NATIVE_CHAT_MODEL),
    }
    out = {}
    for name, data in bodies.items():
        path = workdir / f"body-{name}.json"
        path.write_bytes(data)
        out[name] = path
    return out


def routes_yaml(
    grpc_port: int,
    workers: int,
    listen: int,
    admin: int,
    backends: list[int],
    *,
    validation: bool = False,
    pin_cpu: bool = False,
    unix_socket_dir: str | None = None,
    gateway: str = "",
    keys_file: str = "",
    redis_url: str = "",
) -> str:
    """The routing file: every model served by every nginx port (one deployment each);
    with ``gateway``, API keys (``keys_file``) and a tenant with quotas."""
    deployments = []
    models = [CHAT_MODEL, KSERVE_MODEL, NATIVE_KSERVE_MODEL, NATIVE_CHAT_MODEL]
    if validation:
        models.append(VALID_MODEL)
    for model in models:
        for i, port in enumerate(backends):
            deployments.append(
                {
                    "name": f"{model}-{i}",
                    "model": model,
                    "version": "1",
                    "endpoints": [f"127.0.0.1:{port}"],
                }
            )
    model_docs: dict[str, Any] = {
        CHAT_MODEL: {"protocol": "openai", "versions": ["1"]},
        # The headers row measures the ext_proc hop: keep it off Envoy's native routes.
        KSERVE_MODEL: {"protocol": "kserve_v2", "versions": ["1"], "native": False},
        NATIVE_KSERVE_MODEL: {"protocol": "kserve_v2", "versions": ["1"]},
        NATIVE_CHAT_MODEL: {"protocol": "openai", "versions": ["1"], "native": True},
    }
    doc: dict[str, Any] = {
        "listener": {
            "host": "127.0.0.1",
            "port": grpc_port,
            "metrics_port": 0,
            "workers": workers,
            "grace_period_s": 1,
            "pin_cpu": pin_cpu,
            "unix_socket_dir": unix_socket_dir,
        },
        "envoy": {"listen_port": listen, "admin_port": admin},
        "failure_mode": "closed",
        "models": model_docs,
        "deployments": deployments,
    }
    if gateway:
        doc["auth"] = {"keys_file": keys_file}
        doc["tenants"] = {GATEWAY_TENANT: {"quotas": GATEWAY_QUOTAS}}
        if gateway == "redis":
            doc["quotas"] = {"store": "redis", "redis": {"url": redis_url}}
    if validation:  # only then: the other setups measure the router without specs or rules
        model_docs[VALID_MODEL] = {"protocol": "openai", "versions": ["1"], "spec": VALID_SPEC}
        doc["rules"] = VALID_RULES
    return "# generated by loadtest/bench\n" + yaml.safe_dump(doc, sort_keys=False)


def direct_bootstrap(rendered: str, backends: list[int]) -> str:
    """The shipped bootstrap minus the router: one static route to a static cluster of
    ``backends``, no ext_proc, no json_to_metadata, no xDS.

    Listener, HCM (early header mutation, access log, local replies), the buffer and
    header_mutation filters stay exactly as rendered; timeouts and limits are the ones
    the router's routes and clusters use.
    """
    doc = yaml.safe_load(rendered)
    doc.pop("dynamic_resources", None)
    static = doc["static_resources"]
    hcm = static["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    router_filters = ("envoy.filters.http.ext_proc", "envoy.filters.http.json_to_metadata")
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] not in router_filters]
    hcm.pop("rds", None)
    hcm["route_config"] = {
        "name": "direct",
        "virtual_hosts": [
            {
                "name": "all",
                "domains": ["*"],
                "request_body_buffer_limit": _body_limit(hcm),
                "routes": [
                    {
                        "name": "direct",
                        "match": {"prefix": "/"},
                        "route": {"cluster": "bench_backends", "timeout": "600s",
                                  "idle_timeout": "300s"},
                    }
                ],
            }
        ],
    }  # fmt: skip
    high = 100000
    static["clusters"] = [
        {
            "name": "bench_backends",
            "type": "STATIC",
            "connect_timeout": "2s",
            "lb_policy": "ROUND_ROBIN",
            "circuit_breakers": {
                "thresholds": [
                    {
                        "max_connections": high,
                        "max_pending_requests": high,
                        "max_requests": high,
                        "max_retries": high,
                    }
                ]
            },
            "load_assignment": {
                "cluster_name": "bench_backends",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {"address": "127.0.0.1", "port_value": p}
                                    }
                                }
                            }
                            for p in backends
                        ]
                    }
                ],
            },
        }
    ]
    return "# generated by loadtest/bench: rendered bootstrap minus the router\n" + (
        yaml.safe_dump(doc, sort_keys=False)
    )


def _body_limit(hcm: dict[str, Any]) -> int:
    """The rendered buffer filter's cap (the same number the router's routes use)."""
    buffer = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.buffer")
    return int(buffer["typed_config"]["max_request_bytes"])


def plan(opts: Options) -> Iterator[Setup]:
    """The setups to run, in order; a probe run follows its router run (``both``)."""
    for s in ALL_SETUPS:
        if s.name not in opts.setups:
            continue
        if not (s.routed and s in SETUPS) or s.native or s.uds or opts.router == "model-router":
            yield s
        elif opts.router == "minimal":
            yield s.as_minimal()
        else:
            yield s
            yield s.as_minimal()
    needed = {NATIVE_BASELINES[n] for n in opts.setups if n in NATIVE_BASELINES}
    for b in BASELINES:
        if opts.baselines or (b.name in needed and b.name not in opts.setups):
            yield b
