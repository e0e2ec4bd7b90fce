"""Integration fixtures: real model servers, the real router and a real Envoy on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import httpx
import pytest

from extproc.control.loading import parse_config
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


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    """Start router + Envoy for a routing-file text; every stack is stopped at teardown.

    Ports come from the process-wide allocator, so the gRPC worker run, the metrics run
    and Envoy's ports never overlap each other or another stack's. Each stack works in
    its own directory under the test's ``tmp_path`` (routing file, Envoy bootstrap, logs).
    """
    async with contextlib.AsyncExitStack() as stops:

        async def factory(
            routes: str,
            *,
            workers: int = 1,
            failure_mode: str = "closed",
            grpc_port: int | None = None,
            peers: Sequence[str] = (),
            disclose_endpoint: bool = True,
        ) -> Stack:
            """``grpc_port``: the router's (else allocated); ``peers``: other routers'
            ``ip:port`` this stack's Envoy may also use (``envoy.routers``)."""
            grpc_ports = (
                [grpc_port] if grpc_port is not None else PORTS.take(workers, consecutive=True)
            )
            metrics_ports = PORTS.take(workers, consecutive=True)
            listen, admin = PORTS.take(2)
            routers = ", ".join(f'"{p}"' for p in peers)
            head = (
                f"listener: {{port: {grpc_ports[0]}, metrics_port: {metrics_ports[0]},"
                f" workers: {workers}, grace_period_s: 2}}\n"
                f"envoy: {{listen_port: {listen}, admin_port: {admin},"
                f" disclose_endpoint: {str(disclose_endpoint).lower()},"
                f" routers: [{routers}]}}\n"
                f"failure_mode: {failure_mode}\n"
            )
            workdir = tmp_path / f"stack-{grpc_ports[0]}"
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

        yield factory


@pytest.fixture
async def corpus_stack(model_servers: dict[str, ModelServer], make_stack: StackFactory) -> Stack:
    return await make_stack(routes_for(model_servers))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as c:
        yield c
