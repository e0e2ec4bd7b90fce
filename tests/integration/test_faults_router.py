"""Fault suite, the router's processes: a worker killed mid-load, the whole router killed
under ``up`` (both failure modes), the supervisor killed, a port already taken, a worker
restarted while the routing file is broken, and reloads counted once.

Real router, real Envoy, real model servers on loopback; bounded load (20 s at most per
case, :mod:`tests.integration.load`); every case asserts the counts it promises.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2

from extproc.dev.model_servers import ModelServer
from extproc.ops.procs import PORTS, ManagedProcess, grpc_health, router_argv
from tests.integration.conftest import RESNET, StackFactory, routes_for
from tests.integration.load import Call, Load
from tests.integration.test_resilience import _child_pids
from tests.support import eventually

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
CHAT = {"model": "chat-small", "messages": [{"role": "user", "content": "hello"}]}
# Requests that go through the router (a spec, or an OpenAI body), each to its own model.
ROUTER_CALLS = [
    Call("chat-small", "/v1/chat/completions", CHAT),
    Call("resnet50", "/v2/models/resnet50/versions/2/infer", RESNET),
    Call("embed-mini", "/v1/embeddings", {"model": "embed-mini", "input": "x"}),
    Call("fraud-xgb", "/score", {}, {"x-model": "fraud-xgb"}),
]
ROUTER_DOWN = {"json-503-router_unavailable"}


async def _ready(address: str) -> bool:
    return await grpc_health(address, "readiness") == SERVING


async def test_worker_killed_mid_load_gives_only_json_503_and_recovers(
    model_servers: dict[str, ModelServer], make_stack: StackFactory
) -> None:
    """Closed mode, two workers: killing one gives JSON 503s only, for requests Envoy sent
    it before its health check took it out; once restarted, no request fails."""
    stack = await make_stack(routes_for(model_servers), workers=2)
    assert stack.router is not None
    load = Load(stack.url, ROUTER_CALLS).start()
    try:
        await eventually(lambda: load.ok() >= 50, what="load flowing")
        pids = _child_pids(stack.router.pid)
        os.kill(pids[0], signal.SIGKILL)

        def restarted() -> bool:
            new = _child_pids(stack.router.pid if stack.router else 0)
            return len(new) == 2 and pids[0] not in new

        await eventually(restarted, what="the supervisor restarts the worker")
        await eventually(lambda: _ready(f"127.0.0.1:{stack.config.listener.port}"))
        back = time.monotonic()
        await eventually(lambda: load.ok_since(back) >= 100, what="load after the restart")
    finally:
        counts = await load.stop()
    assert set(load.errors()) <= ROUTER_DOWN, counts
    assert load.errors_since(back) == 0, counts


@pytest.fixture
async def up_routes(tmp_path: Path, model_servers: dict[str, ModelServer]) -> Path:
    grpc_port, mport, listen, admin = PORTS.take(4)
    path = tmp_path / "routes.yaml"
    path.write_text(
        f"listener: {{port: {grpc_port}, metrics_port: {mport}, grace_period_s: 2}}\n"
        f"envoy: {{listen_port: {listen}, admin_port: {admin}}}\n" + routes_for(model_servers)
    )
    return path


class Up:
    """``model-router up`` as a user runs it; its output lines, as they come."""

    def __init__(self, path: Path, *args: str) -> None:
        self.argv = [sys.executable, "-m", "extproc", "up", "--config", str(path), *args]
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        self._reader = asyncio.create_task(self._read(), name="up-output")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode())

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def value(self, prefix: str) -> str:
        line = next(ln for ln in self.lines if ln.startswith(prefix))
        return line.split()[1]

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), 60)  # a guard against hangs
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await self._reader
        return self.proc.returncode or 0


@pytest.fixture
async def up_factory() -> AsyncIterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        await up.stop()


@pytest.mark.parametrize("mode", ["closed", "open"])
async def test_up_restarts_a_killed_router_and_keeps_envoy(
    mode: str, up_routes: Path, up_factory: list[Up], model_servers: dict[str, ModelServer]
) -> None:
    """``kill -9`` of the router under ``up``: Envoy keeps running and ``up`` starts the
    router again. Closed mode: only JSON 503s meanwhile, none once it is back. Open
    mode: no error at all, every request at its own model (marked fail-open)."""
    if mode == "open":
        _append(up_routes, "failure_mode: open\n")
    up = Up(up_routes)
    up_factory.append(up)
    await up.start()
    await eventually(lambda: up.said("Ctrl-C stops both"), timeout=120, what="up started")
    url = up.value("envoy")
    assert up.proc is not None
    children = _child_pids(up.proc.pid)
    assert len(children) == 2  # the router and Envoy
    load = Load(url, ROUTER_CALLS).start()
    try:
        await eventually(lambda: load.ok() >= 50, what="load flowing")
        router = next(p for p in children if " serve " in _cmdline(p))
        envoy = next(p for p in children if p != router)
        os.kill(router, signal.SIGKILL)
        await eventually(lambda: up.said("router is back"), what="up restarts the router")
        back = time.monotonic()
        await eventually(lambda: load.ok_since(back) >= 100, what="load after the restart")
    finally:
        counts = await load.stop()
    assert up.said("router exited (killed by SIGKILL)"), up.lines
    assert envoy in _child_pids(up.proc.pid)  # the same Envoy, never stopped
    if mode == "closed":
        assert set(load.errors()) <= ROUTER_DOWN, counts
        assert load.errors_since(back) == 0, counts
    else:
        assert not load.errors(), counts
        assert load.marked > 0, counts  # Envoy's fail-open route served meanwhile
    assert await up.stop() == 0
    assert up.said("stopped")


async def test_supervisor_killed_its_workers_follow_and_a_fresh_start_serves(
    tmp_path: Path,
) -> None:
    """``kill -9`` of ``serve --workers 2``: its workers exit (parent-death signal), and a
    new ``serve`` started right away listens on the same ports (no crash loop)."""
    port, mport = PORTS.take(2, consecutive=True)[0], PORTS.take(2, consecutive=True)[0]
    path = tmp_path / "routes.yaml"
    path.write_text(
        f"listener: {{port: {port}, metrics_port: {mport}, grace_period_s: 1}}\n"
        "models: {m: {protocol: openai, versions: ['1']}}\n"
        "deployments: [{name: d, model: m, version: '1', endpoints: ['127.0.0.1:9']}]\n"
    )
    first = ManagedProcess("first", router_argv(path, workers=2), log=tmp_path / "first.log")
    second = ManagedProcess("second", router_argv(path, workers=2), log=tmp_path / "second.log")
    try:
        await first.start()
        for p in (port, port + 1):
            await eventually(lambda p=p: _ready(f"127.0.0.1:{p}"), timeout=60)
        workers = _child_pids(first.pid)
        assert len(workers) == 2
        first.signal(signal.SIGKILL)

        def orphans() -> list[int]:
            return [w for w in workers if Path(f"/proc/{w}").exists() and not _zombie(w)]

        await second.start()  # at once: the first's workers may still hold the ports
        await eventually(lambda: not orphans(), what="the workers exit with their supervisor")
        for p in (port, port + 1):
            await eventually(lambda p=p: _ready(f"127.0.0.1:{p}"), timeout=60)
        assert second.running
        assert len(_child_pids(second.pid)) == 2
        assert "Traceback" not in (tmp_path / "second.log").read_text()
    finally:
        await second.stop()
        await first.stop()


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def _yaml(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def test_a_port_in_use_is_one_clear_line_not_a_traceback(
    tmp_path: Path, up_routes: Path
) -> None:
    port, mport = PORTS.take(2)
    path = tmp_path / "serve.yaml"
    path.write_text(
        f"listener: {{port: {port}, metrics_port: {mport}}}\n"
        "models: {m: {protocol: openai, versions: ['1']}}\n"
    )
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        serve = await asyncio.create_subprocess_exec(
            *router_argv(path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(serve.communicate(), 120)  # a guard against hangs
    text = err.decode()
    assert serve.returncode == 3, text
    assert f"cannot listen on 127.0.0.1:{port} (gRPC, listener.port): address in use" in text
    assert "Traceback" not in text
    # up checks every port before it starts anything, and names the setting.
    listen = int(_yaml(up_routes)["envoy"]["listen_port"])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", listen))
        holder.listen()
        up = Up(up_routes)
        await up.start()
        assert up.proc is not None
        code = await asyncio.wait_for(up.proc.wait(), 120)
        await up.stop()
    out = "".join(up.lines)
    assert code == 1, out
    assert f"port {listen} on 127.0.0.1 (envoy.listen_port in {up_routes}) is already in use" in out
    assert "Traceback" not in out


async def test_a_worker_restarted_while_the_file_is_broken_starts_on_the_last_good_one(
    model_servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    stack = await make_stack(routes_for(model_servers), workers=2)
    assert stack.router is not None
    stack.config_path.write_text("models: [this is not valid")
    log = stack.workdir / "router.log"
    await eventually(lambda: log.read_text().count("reload rejected") >= 2, what="both refuse")
    pids = _child_pids(stack.router.pid)
    os.kill(pids[0], signal.SIGKILL)
    await eventually(lambda: len(set(_child_pids(stack.router.pid if stack.router else 0)) - set(pids)) == 1)  # fmt: skip
    await eventually(lambda: _ready(f"127.0.0.1:{stack.config.listener.port}"), timeout=60)
    assert "starting on the last good one" in log.read_text()
    for _ in range(20):  # both workers serve
        r = await client.post(stack.url + "/v1/chat/completions", json=CHAT)
        assert r.status_code == 200, r.text


def _reloads(text: str, result: str) -> float:
    line = f'model_router_config_reloads_total{{result="{result}"}}'
    return float(next(ln for ln in text.splitlines() if ln.startswith(line)).split()[-1])


async def test_sighup_after_an_edit_is_one_reload(
    model_servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    """Edit the file and send SIGHUP: the reload is counted once (the file watch, which
    also sees the edit, does not load it again)."""
    stack = await make_stack(routes_for(model_servers))
    assert stack.router is not None
    metrics = f"http://127.0.0.1:{stack.config.listener.metrics_port}/metrics"

    async def count() -> float:
        return _reloads((await client.get(metrics)).text, "success")

    before = await count()

    def now_at(n: float) -> object:
        async def check() -> bool:
            return await count() == before + n

        return check

    path = stack.config_path
    path.write_text(path.read_text() + "\n# edit 1\n")
    stack.router.signal(signal.SIGHUP)
    await eventually(now_at(1), what="the SIGHUP reload")  # type: ignore[arg-type]
    await asyncio.sleep(3.0)  # three looks of the file watch (every 1 s) at the same file
    assert await count() == before + 1
    path.write_text(path.read_text() + "# edit 2\n")  # the watch alone: one more
    await eventually(now_at(2), what="the watched reload")  # type: ignore[arg-type]
    await asyncio.sleep(3.0)
    assert await count() == before + 2


async def test_reload_storm_of_valid_and_broken_files_loses_no_request(
    model_servers: dict[str, ModelServer], make_stack: StackFactory, client: httpx.AsyncClient
) -> None:
    stack = await make_stack(routes_for(model_servers), workers=2)
    assert stack.router is not None
    path = stack.config_path
    good = path.read_text()
    other = good.replace('{name: "chat-small-v1", ', '{name: "chat-small-v1", weight: 2, ')
    assert other != good
    broken = [
        good.replace("models:", "modles:", 1),  # an unknown key, no models
        "models: [truncated",  # not YAML
        good.replace("protocol: openai", "protocol: grpc", 1),  # a schema error
    ]
    urls = [f"http://127.0.0.1:{stack.config.listener.metrics_port + i}/metrics" for i in (0, 1)]

    async def reloads(result: str) -> list[float]:
        return [_reloads((await client.get(url)).text, result) for url in urls]

    load = Load(stack.url, ROUTER_CALLS).start()
    writes = 0
    try:
        await eventually(lambda: load.ok() >= 20, what="load flowing")
        for i in range(12):  # bounded: 12 files, each read by both workers before the next
            # Valid and broken files alternate, so a late reload of the previous file
            # counts as the other result and cannot stand in for this one.
            result = "error" if i % 2 else "success"
            before = await reloads(result)
            path.write_text((good, broken[i % 3], other, broken[(i + 1) % 3])[i % 4])
            stack.router.signal(signal.SIGHUP)
            writes += 1

            async def both_read_it(before: list[float] = before, result: str = result) -> bool:
                return all(a > b for a, b in zip(await reloads(result), before, strict=True))

            await eventually(both_read_it, what=f"both workers read file {i}")
    finally:
        counts = await load.stop()
    assert not load.errors(), counts
    assert load.ok() > 0
    assert all(e >= writes // 2 for e in await reloads("error"))  # each broken file, each worker
    for _ in range(10):  # the last file written was broken: the last good one serves
        r = await client.post(stack.url + "/v1/chat/completions", json=CHAT)
        assert r.status_code == 200


async def test_up_with_workers_restarts_envoy_and_the_supervisor(
    up_routes: Path, up_factory: list[Up], client: httpx.AsyncClient
) -> None:
    """``up --workers 2``: Envoy killed, then the whole router (its supervisor) killed;
    ``up`` starts each again and requests are served after each."""
    up = Up(up_routes, "--workers", "2")
    up_factory.append(up)
    await up.start()
    await eventually(lambda: up.said("Ctrl-C stops both"), timeout=120, what="up started")
    assert up.said("router    worker 1: grpc")
    url = up.value("envoy")
    assert up.proc is not None

    async def serves() -> bool:
        r = await client.post(url + "/v1/chat/completions", json=CHAT)
        return r.status_code == 200

    await eventually(serves)
    for name, is_router in (("envoy", False), ("router", True)):
        children = _child_pids(up.proc.pid)
        victim = next(p for p in children if (" serve " in _cmdline(p)) == is_router)
        os.kill(victim, signal.SIGKILL)
        await eventually(lambda name=name: up.said(f"{name} is back"), timeout=120)
        assert up.said(f"{name} exited (killed by SIGKILL)")
        await eventually(serves)
    assert await up.stop() == 0
