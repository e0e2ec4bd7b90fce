"""Small real HTTP model servers (OpenAI-style and KServe v2) for demos and integration tests.

They stand in for vLLM / Triton deployments: every response is tagged with the serving
deployment (``x-served-by``, ``x-served-model``, ``x-served-version``) and every request
received is recorded so tests can check what the router forwarded.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Handler

from extproc.dev.lifecycle import StartStop

__all__ = [
    "ModelServer",
    "ModelServerSpec",
    "ReceivedRequest",
    "run_servers",
    "serve_forever",
]

MAX_RECEIVED = 1000
HEALTH_PATHS = frozenset({"/health", "/v2/health/ready", "/v2/health/live"})
HEALTH_CHECKER = "Envoy/HC"
"""Envoy's active health checks (``User-Agent: Envoy/HC`` on these paths) are counted in
``health_checks``, not in ``received`` or ``count``, which are the traffic sent through
the router (a client's own ``GET /health`` is traffic)."""
DEFAULT_MAX_BODY = 64 * 1024 * 1024
_DEFAULT_INPUTS: list[dict[str, Any]] = [{"name": "in", "datatype": "FP32", "shape": [-1, 1]}]
_DEFAULT_OUTPUTS: list[dict[str, Any]] = [{"name": "out", "datatype": "FP32", "shape": [-1, 1]}]


@dataclass(frozen=True)
class ModelServerSpec:
    """What one dev server serves. ``port=0`` picks a free port at start."""

    name: str
    kind: Literal["openai", "kserve_v2"]
    model: str
    version: str
    host: str = "127.0.0.1"
    port: int = 0
    stream_delay_s: float = 0.05
    stream_chunks: int = 5
    metadata: Mapping[str, Any] | None = field(default=None, hash=False)
    strict: bool = False  # kserve_v2: 404 when the path's model name/version differ from spec
    max_body_bytes: int = DEFAULT_MAX_BODY


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body_len: int
    at: float


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")


def _split(text: str, n: int) -> list[str]:
    step = max(1, -(-len(text) // max(1, n)))
    parts = [text[i : i + step] for i in range(0, len(text), step)]
    return (parts + [""] * n)[: max(1, n)]


class ModelServer(StartStop):
    """One aiohttp server. ``start()`` binds, ``stop()`` releases; also an async context manager."""

    def __init__(self, spec: ModelServerSpec) -> None:
        self.spec = spec
        self.received: deque[ReceivedRequest] = deque(maxlen=MAX_RECEIVED)
        self.count = 0
        self.health_checks = 0
        self._healthy = True
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError(f"{self.spec.name} already started")
        runner = web.AppRunner(self._build_app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.spec.host, self.spec.port)
            await site.start()
            self._port = int(runner.addresses[0][1])
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- accessors -----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self.spec.name} not started")
        return self._port

    @property
    def address(self) -> str:
        host = self.spec.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def healthy(self) -> bool:
        return self._healthy

    def set_healthy(self, healthy: bool) -> None:
        self._healthy = healthy

    def clear_received(self, keep: int = MAX_RECEIVED) -> None:
        """Forget the traffic received so far; remember the last ``keep`` requests."""
        self.received = deque(maxlen=keep)
        self.count = 0

    def __repr__(self) -> str:
        s = self.spec
        addr = self.address if self._port is not None else "not-started"
        return (
            f"ModelServer(name={s.name!r}, kind={s.kind!r}, model={s.model!r}, "
            f"version={s.version!r}, address={addr!r}, served={self.count}, "
            f"health_checks={self.health_checks})"
        )

    # -- app -----------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record], client_max_size=self.spec.max_body_bytes)
        app.on_response_prepare.append(self._tag)
        r = app.router
        r.add_get("/health", self._health)
        if self.spec.kind == "openai":
            r.add_get("/v1/models", self._models)
            r.add_post("/v1/chat/completions", self._chat)
            r.add_post("/v1/completions", self._completions)
            r.add_post("/v1/embeddings", self._embeddings)
            r.add_post("/{tail:.*}", self._generic)
        else:
            r.add_get("/v2/health/ready", self._health)
            r.add_get("/v2/health/live", self._health)
            # Model names may contain '/': versioned paths first (routes match in order).
            for suffix, method, handler in (
                ("/ready", "GET", self._v2_ready),
                ("/config", "GET", self._v2_config),
                ("/stats", "GET", self._v2_stats),
                ("/infer", "POST", self._v2_infer),
                ("", "GET", self._v2_metadata),
            ):
                r.add_route(method, "/v2/models/{name:.+}/versions/{version:[^/]+}" + suffix,
                            handler)  # fmt: skip
                r.add_route(method, "/v2/models/{name:.+}" + suffix, handler)
            r.add_post("/{tail:.*}", self._generic)  # generic JSON APIs (x-model)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            request.method == "GET"
            and request.path in HEALTH_PATHS
            and request.headers.get("user-agent") == HEALTH_CHECKER
        ):
            self.health_checks += 1
            return await handler(request)
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.received.append(
            ReceivedRequest(
                request.method, request.path, request.query_string, headers, len(body), time.time()
            )
        )
        self.count += 1
        return await handler(request)

    async def _tag(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-served-by"] = self.spec.name
        response.headers["x-served-model"] = self.spec.model
        response.headers["x-served-version"] = self.spec.version

    async def _health(self, request: web.Request) -> web.Response:
        if self._healthy:
            return _json({"status": "ok"})
        return _json({"status": "unhealthy"}, status=503)

    # -- openai --------------------------------------------------------------------------
    async def _body_json(self, request: web.Request) -> dict[str, Any] | web.Response:
        raw = await request.read()
        try:
            data = json.loads(raw) if raw else {}
        except (ValueError, UnicodeDecodeError) as e:
            data = f"invalid JSON: {e}"
        if isinstance(data, dict):
            return data
        msg = data if isinstance(data, str) else "body must be a JSON object"
        return _json({"error": {"message": msg, "type": "invalid_request_error"}}, 400)

    def _usage(self, request: web.Request, completion: int) -> dict[str, int]:
        prompt = max(1, (request.content_length or 0) // 4)
        return dict(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        )

    def _base(self, body: dict[str, Any], prefix: str, obj: str) -> dict[str, Any]:
        model = str(body.get("model") or self.spec.model)
        return {
            "id": f"{prefix}-{uuid.uuid4().hex[:24]}",
            "object": obj,
            "created": int(time.time()),
            "model": model,
        }

    async def _models(self, request: web.Request) -> web.Response:
        entry = {"id": self.spec.model, "object": "model", "created": 0, "owned_by": "devserver"}
        return _json({"object": "list", "data": [entry]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body_json(request)
        if isinstance(body, web.Response):
            return body
        text = f"hello from {self.spec.name}"
        if body.get("stream") is True:
            return await self._stream_chat(request, body, text)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }
        usage = self._usage(request, len(text.split()))
        return _json(
            {**self._base(body, "chatcmpl", "chat.completion"), "choices": [choice], "usage": usage}
        )

    async def _stream_chat(
        self, request: web.Request, body: dict[str, Any], text: str
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        base = self._base(body, "chatcmpl", "chat.completion.chunk")
        pieces = _split(text, self.spec.stream_chunks)
        opts = body.get("stream_options")
        try:
            for i, piece in enumerate(pieces):
                if i:
                    await asyncio.sleep(self.spec.stream_delay_s)
                delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
                finish = "stop" if i == len(pieces) - 1 else None
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
                await resp.write(f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode())
            if isinstance(opts, dict) and opts.get("include_usage") is True:
                usage = {**base, "choices": [], "usage": self._usage(request, len(pieces))}
                await resp.write(f"data: {json.dumps(usage)}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except ConnectionError:
            pass  # client went away mid-stream
        return resp

    async def _completions(self, request: web.Request) -> web.Response:
        body = await self._body_json(request)
        if isinstance(body, web.Response):
            return body
        text = f"hello from {self.spec.name}"
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
        usage = self._usage(request, len(text.split()))
        return _json(
            {**self._base(body, "cmpl", "text_completion"), "choices": [choice], "usage": usage}
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._body_json(request)
        if isinstance(body, web.Response):
            return body
        inp = body.get("input", "")
        data = []
        for i, item in enumerate(inp if isinstance(inp, list) else [inp]):
            digest = hashlib.sha256(json.dumps(item).encode()).digest()
            vector = [round(b / 255.0 - 0.5, 6) for b in digest[:8]]
            data.append({"object": "embedding", "index": i, "embedding": vector})
        usage = self._usage(request, 0)
        del usage["completion_tokens"]
        model = str(body.get("model") or self.spec.model)
        return _json({"object": "list", "model": model, "data": data, "usage": usage})

    async def _generic(self, request: web.Request) -> web.Response:
        model = self.spec.model
        raw = await request.read()
        try:
            data = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            model = data["model"]
        return _json({"served_by": self.spec.name, "model": model, "path": request.path})

    # -- kserve v2 -----------------------------------------------------------------------
    def _v2_mismatch(self, request: web.Request) -> web.Response | None:
        name, version = request.match_info["name"], request.match_info.get("version")
        if self.spec.strict and (
            name != self.spec.model or version not in (None, self.spec.version)
        ):
            return _json({"error": f"Request for unknown model: '{name}' version {version}"}, 404)
        return None

    async def _v2_metadata(self, request: web.Request) -> web.Response:
        if (err := self._v2_mismatch(request)) is not None:
            return err
        meta = dict(self.spec.metadata or {})
        return _json(
            {
                "name": self.spec.model,
                "versions": [self.spec.version],
                "platform": meta.get("platform", "devserver"),
                "inputs": meta.get("inputs", _DEFAULT_INPUTS),
                "outputs": meta.get("outputs", _DEFAULT_OUTPUTS),
            }
        )

    async def _v2_ready(self, request: web.Request) -> web.Response:
        """Model ready (Open Inference Protocol): 200 while ready, with KServe's
        ``{"name", "ready"}`` body; not ready (the health switch off) is a 503."""
        if (err := self._v2_mismatch(request)) is not None:
            return err
        ready = {"name": self.spec.model, "ready": self._healthy}
        return _json(ready, status=200 if self._healthy else 503)

    async def _v2_config(self, request: web.Request) -> web.Response:
        """Triton's model configuration extension (``GET .../config``), in its JSON form."""
        if (err := self._v2_mismatch(request)) is not None:
            return err
        meta = dict(self.spec.metadata or {})
        tensors = [
            {"name": t["name"], "data_type": f"TYPE_{t['datatype']}", "dims": t["shape"]}
            for t in meta.get("inputs", _DEFAULT_INPUTS)
        ]
        return _json(
            {"name": self.spec.model, "platform": "devserver", "max_batch_size": 0,
             "input": tensors, "version_policy": {"specific": {"versions": [self.spec.version]}}}
        )  # fmt: skip

    async def _v2_stats(self, request: web.Request) -> web.Response:
        """Triton's statistics extension (``GET .../stats``): requests served so far."""
        if (err := self._v2_mismatch(request)) is not None:
            return err
        served = {"count": self.count, "ns": 0}
        stats = {"name": self.spec.model, "version": self.spec.version,
                 "inference_count": self.count, "inference_stats": {"success": served}}  # fmt: skip
        return _json({"model_stats": [stats]})

    async def _v2_infer(self, request: web.Request) -> web.Response:
        if (err := self._v2_mismatch(request)) is not None:
            return err
        raw = await request.read()
        header_len = request.headers.get("inference-header-content-length")
        ctype = request.headers.get("Content-Type", "").lower()
        payload: Any = None
        try:
            if header_len is not None:
                payload = json.loads(raw[: int(header_len)])
            elif raw and not ctype.startswith("application/octet-stream"):
                payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            return _json({"error": f"invalid inference request: {e}"}, 400)
        result: dict[str, Any] = {"model_name": self.spec.model, "model_version": self.spec.version}
        if isinstance(payload, dict) and "id" in payload:
            result["id"] = payload["id"]
        result["outputs"] = [{"name": "out", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}]
        return _json(result)


async def run_servers(specs: Sequence[ModelServerSpec]) -> list[ModelServer]:
    """Start one server per spec; if any fails, stop the ones already started and re-raise."""
    servers: list[ModelServer] = []
    try:
        for spec in specs:
            server = ModelServer(spec)
            await server.start()
            servers.append(server)
    except BaseException:
        for server in reversed(servers):
            await server.stop()
        raise
    return servers


async def serve_forever(specs: Sequence[ModelServerSpec]) -> None:
    """Start servers, print ``name kind model version address`` per server, run until cancelled."""
    servers = await run_servers(specs)
    try:
        for s in servers:
            print(s.spec.name, s.spec.kind, s.spec.model, s.spec.version, s.address, flush=True)
        await asyncio.Event().wait()
    finally:
        for s in reversed(servers):
            await s.stop()
