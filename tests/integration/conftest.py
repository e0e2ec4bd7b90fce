"""Integration fixtures: real model servers, the real router and a real Envoy on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from extproc.control.loading import parse_config
from extproc.dev.backends import KServeServer
from extproc.dev.inference_sim import InferenceSim, inference_sim_binary
from extproc.dev.model_servers import ModelServer, ModelServerSpec, run_servers
from extproc.ops.envoy_config import EnvoyPorts
from extproc.ops.procs import PORTS
from extproc.ops.stack import Stack
from tests.corpus import corpus_routes, specs

# Valid bodies for the corpus specs (resnet50: FP32 [-1,3,-1,-1]; fraud-xgb: features FP32
# [-1,8] + merchant_category INT64 [-1,1]).
RESNET = {
    "inputs": [
        {"name": "input", "datatype": "FP32", "shape": [1, 3, 1, 1], "data": [0.1, 0.2, 0.3]}
    ]
}
FRAUD = {
    "inputs": [
        {"name": "features", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8},
        {"name": "merchant_category", "datatype": "INT64", "shape": [1, 1], "data": [5411]},
    ]
}

# One deployment per corpus model version; chat-small v1 also has a second replica.
SERVER_SPECS = [
    ModelServerSpec("chat-small-v1-a", "openai", "chat-small", "1"),
    ModelServerSpec("chat-small-v1-b", "openai", "chat-small", "1"),
    ModelServerSpec("chat-small-v2", "openai", "chat-small", "2"),
    ModelServerSpec("chat-large-v1", "openai", "chat-large", "1"),
    ModelServerSpec("embed-mini-v1", "openai", "embed-mini", "1"),
    ModelServerSpec("resnet50-v1", "kserve_v2", "resnet50", "1"),
    ModelServerSpec("resnet50-v2", "kserve_v2", "resnet50", "2"),
    ModelServerSpec("fraud-xgb-v3", "kserve_v2", "fraud-xgb", "3"),
]


@pytest.fixture(autouse=True)
def children_use_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes a test starts (``up``, a supervisor) make their temporary directories
    under the test's ``tmp_path``, so none is left in /tmp (a SIGKILLed supervisor
    cannot remove its own)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))


@contextlib.asynccontextmanager
async def running(server_specs: list[ModelServerSpec]) -> AsyncIterator[dict[str, ModelServer]]:
    """Real model servers by name, always stopped afterwards (each one, even if another's
    stop fails)."""
    servers = await run_servers(server_specs)
    async with contextlib.AsyncExitStack() as stops:
        for s in servers:
            stops.push_async_callback(s.stop)
        yield {s.spec.name: s for s in servers}


@pytest.fixture(scope="session")
async def model_servers() -> AsyncIterator[dict[str, ModelServer]]:
    specs()  # skip/fail early without the corpus
    async with running(SERVER_SPECS) as servers:
        yield servers


def routes_for(servers: dict[str, ModelServer], *, header: str = "", extra: str = "") -> str:
    """The corpus routing file pointing at the live servers (two replicas of chat-small v1)."""
    by_version: dict[str, list[str]] = {}
    for s in servers.values():
        by_version.setdefault(f"{s.spec.model}@{s.spec.version}", []).append(s.address)
    text = corpus_routes({k: v[0] for k, v in by_version.items()})
    extra_eps = by_version["chat-small@1"][1:]
    if extra_eps:
        first = by_version["chat-small@1"][0]
        text = text.replace(
            f'endpoints: ["{first}"]', f'endpoints: ["{first}", "{extra_eps[0]}"]', 1
        )
    return header + text + extra


StackFactory = Callable[..., Awaitable[Stack]]


async def start_stack(
    stops: contextlib.AsyncExitStack,
    workdir: Path,
    routes: str,
    *,
    workers: int = 1,
    failure_mode: str = "closed",
    grpc_port: int | None = None,
    peers: Sequence[str] = (),
    disclose_endpoint: bool = True,
) -> Stack:
    """Router + Envoy for a routing-file text, on allocated loopback ports, working in a
    new directory under ``workdir``; ``stops`` stops it. ``grpc_port``: the router's
    (else allocated); ``peers``: other routers' ``ip:port`` this stack's Envoy may also
    use (``envoy.routers``)."""
    grpc_ports = [grpc_port] if grpc_port is not None else PORTS.take(workers, consecutive=True)
    metrics_ports = PORTS.take(workers, consecutive=True)
    listen, admin = PORTS.take(2)
    routers = ", ".join(f'"{p}"' for p in peers)
    head = (
        f"listener: {{port: {grpc_ports[0]}, metrics_port: {metrics_ports[0]},"
        f" workers: {workers}, grace_period_s: 2}}\n"
        f"envoy: {{listen_port: {listen}, admin_port: {admin},"
        f" disclose_endpoint: {str(disclose_endpoint).lower()}, routers: [{routers}]}}\n"
        f"failure_mode: {failure_mode}\n"
    )
    workdir = workdir / f"stack-{grpc_ports[0]}"
    workdir.mkdir()
    path = workdir / "routes.yaml"
    text = head + routes
    path.write_text(text)
    config = parse_config(text)
    stack = Stack(config, path, workdir=workdir, log_level="info")
    stack.ports = EnvoyPorts.from_config(config)
    stops.push_async_callback(stack.stop)
    await stack.start()
    return stack


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    """Start router + Envoy for a routing-file text (:func:`start_stack`); every stack is
    stopped at teardown.

    Ports come from the process-wide allocator, so the gRPC worker run, the metrics run
    and Envoy's ports never overlap each other or another stack's. Each stack works in
    its own directory under the test's ``tmp_path`` (routing file, Envoy bootstrap, logs).
    """
    async with contextlib.AsyncExitStack() as stops:

        async def factory(routes: str, **kw: Any) -> Stack:
            return await start_stack(stops, tmp_path, routes, **kw)

        yield factory


@pytest.fixture
async def corpus_stack(model_servers: dict[str, ModelServer], make_stack: StackFactory) -> Stack:
    return await make_stack(routes_for(model_servers))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as c:
        yield c


# --- Real clients against real backends (tests/integration/test_*_client.py) -----------

FRAUD_TENSORS = [
    {"name": "features", "datatype": "FP32", "shape": [-1, 8]},
    {"name": "merchant_category", "datatype": "INT64", "shape": [-1, 1]},
    {"name": "country", "datatype": "BYTES", "shape": [-1, 1], "optional": True},
    {"name": "card_present", "datatype": "BOOL", "shape": [-1, 1], "optional": True},
]
FRAUD_SPEC = {
    "inputs": FRAUD_TENSORS,
    "outputs": [{k: v for k, v in t.items() if k != "optional"} for t in FRAUD_TENSORS],
}
CHAT_SPEC = {"max_tokens": 64, "max_messages": 8, "forbidden_params": ["logit_bias"]}


@dataclass
class ClientsEnv:
    """The router in front of llm-d-inference-sim (OpenAI), KServe's ModelServer and our
    dev KServe server (Triton's /config and /stats, gzip and deflate bodies)."""

    stack: Stack
    sim: InferenceSim
    kserve: KServeServer
    dev: ModelServer

    @property
    def router(self) -> str:
        """``host:port`` of Envoy, where clients send requests."""
        return self.stack.url.removeprefix("http://")


def clients_routes(sim: str, kserve: str, dev: str) -> str:
    """``chat-small`` (with a spec) and ``org/llm`` on the simulator; ``fraud-xgb`` on
    KServe and ``org/dev-fraud`` on the dev server, both with the fraud spec."""
    models = {
        "chat-small": {"protocol": "openai", "versions": ["1"], "spec": {"openai": CHAT_SPEC}},
        "org/llm": {"protocol": "openai", "versions": ["1"]},
        "fraud-xgb": {"protocol": "kserve_v2", "versions": ["1"],
                      "spec": {"kserve_v2": FRAUD_SPEC}},
        "org/dev-fraud": {"protocol": "kserve_v2", "versions": ["1"],
                          "spec": {"kserve_v2": FRAUD_SPEC}},
    }  # fmt: skip
    deployments = [
        {"name": "sim-chat", "model": "chat-small", "version": "1", "endpoints": [sim]},
        {"name": "sim-org", "model": "org/llm", "version": "1", "endpoints": [sim]},
        {"name": "kserve", "model": "fraud-xgb", "version": "1", "endpoints": [kserve]},
        {"name": "dev", "model": "org/dev-fraud", "version": "1", "endpoints": [dev]},
    ]
    return f"models: {json.dumps(models)}\ndeployments: {json.dumps(deployments)}\n"


class ServerThread:
    """A dev :class:`ModelServer` on its own event loop in a thread, so that blocking
    clients (``tritonclient``'s sync client, which runs on gevent) can call it from the
    test's thread while the test's loop is not running."""

    def __init__(self, spec: ModelServerSpec) -> None:
        self.server = ModelServer(spec)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"dev-{spec.name}", daemon=True)

    def __repr__(self) -> str:
        return f"ServerThread({self.server!r}, alive={self._thread.is_alive()})"

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.stop()

    async def start(self) -> None:
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)
        if self._error is not None:
            raise self._error

    async def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join)


@pytest.fixture(scope="session")
async def clients_env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ClientsEnv]:
    workdir = tmp_path_factory.mktemp("clients")
    async with contextlib.AsyncExitStack() as stops:
        binary = inference_sim_binary()
        if binary is None:  # scripts/test installs it (a failure under CI)
            pytest.skip("no llm-d-inference-sim: run scripts/install-inference-sim")
        sim = InferenceSim(binary, "chat-small", served=["chat-small", "org/llm"], mode="echo",
                           seed=7, itl_ms=5, log=workdir / "sim.log")  # fmt: skip
        try:
            kserve = KServeServer(["fraud-xgb"], workdir=workdir)
        except FileNotFoundError as exc:  # scripts/test installs it (a failure under CI)
            pytest.skip(str(exc))
        dev_spec = ModelServerSpec("dev-fraud", "kserve_v2", "org/dev-fraud", "1",
                                   metadata={"inputs": FRAUD_TENSORS})  # fmt: skip
        # Started one after the other: each pushes its stop only once it runs.
        for backend in (sim, kserve):
            await backend.start()
            stops.push_async_callback(backend.stop)
        dev_thread = ServerThread(dev_spec)
        await dev_thread.start()
        stops.push_async_callback(dev_thread.stop)
        dev = dev_thread.server
        routes = clients_routes(sim.address, kserve.address, dev.address)
        stack = await start_stack(stops, workdir, routes)
        yield ClientsEnv(stack, sim, kserve, dev)
