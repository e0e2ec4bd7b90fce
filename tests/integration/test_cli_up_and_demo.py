"""The user-facing commands, run for real: ``model-router up`` and ``model-router demo``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from extproc.dev.model_servers import ModelServer
from extproc.ops.procs import PORTS
from tests.integration.conftest import RESNET, routes_for
from tests.support import eventually, finish

pytestmark = pytest.mark.integration


async def test_up_prints_addresses_routes_and_stops_on_ctrl_c(
    tmp_path: Path, model_servers: dict[str, ModelServer]
) -> None:
    grpc_port, mport, listen, admin = PORTS.take(4)
    path = tmp_path / "routes.yaml"
    path.write_text(
        f"listener: {{port: {grpc_port}, metrics_port: {mport}, grace_period_s: 2}}\n"
        f"envoy: {{listen_port: {listen}, admin_port: {admin}}}\n" + routes_for(model_servers)
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "extproc", "up", "--config", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()  # hang guard
            assert line, f"up exited early: {''.join(lines)}"
            lines.append(line)
            if "Ctrl-C stops both" in line:
                break
        text = "".join(lines)
        assert f"envoy     http://127.0.0.1:{listen}" in text
        assert f"grpc 127.0.0.1:{grpc_port}" in text
        assert f"metrics http://127.0.0.1:{mport}/metrics" in text
        async with httpx.AsyncClient(trust_env=False) as c:
            r = await c.post(f"http://127.0.0.1:{listen}/v2/models/resnet50/infer", json=RESNET)
            assert r.status_code == 200 and r.headers["x-served-model"] == "resnet50"
        proc.send_signal(signal.SIGINT)
        rest = (await finish(proc, 120)).decode()
        assert proc.returncode == 0, rest
        assert "stopped" in rest
        async with httpx.AsyncClient(trust_env=False) as c:
            with pytest.raises(httpx.ConnectError):
                await c.post(f"http://127.0.0.1:{listen}/v2/models/resnet50/infer", json={})
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_demo_exits_zero_and_prints_the_table(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "extproc", "demo",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    text = (await finish(proc)).decode()
    assert proc.returncode == 0, text
    assert os.listdir(tmp_path) == []  # its routing file and logs are gone
    assert "8/8 requests landed where the router said." in text
    assert "chat-small-v2 (" in text and "SSE chunks" in text
    assert "model_not_found" in text


async def test_load_aware_demo_on_simulators(tmp_path: Path) -> None:
    from extproc.dev.inference_sim import inference_sim_binary

    if inference_sim_binary() is None:
        pytest.skip("no llm-d-inference-sim: run scripts/install-inference-sim")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "extproc", "demo", "--scenario", "load-aware",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    text = (await finish(proc)).decode()
    assert proc.returncode == 0, text
    assert "load-aware picks: as expected." in text
    assert "requests -> {'sim-0': 6}" in text and "requests -> {'sim-1': 6}" in text
    assert "sheddable -> {'429': 4}" in text
    assert os.listdir(tmp_path) == []


async def test_children_die_with_their_parent() -> None:
    """If `up` (or any supervisor) is SIGKILLed, Envoy and the router must not linger."""
    code = (
        "import asyncio\n"
        "from extproc.ops.procs import ManagedProcess\n"
        "async def m():\n"
        "    mp = ManagedProcess('sleeper', ['sleep', '300'])\n"
        "    await mp.start()\n"
        "    print(mp.pid, flush=True)\n"
        "    await asyncio.sleep(300)\n"
        "asyncio.run(m())\n"
    )
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        child = int((await asyncio.wait_for(parent.stdout.readline(), 60)).decode())
    finally:
        parent.kill()
        await parent.wait()

    def child_gone() -> bool:
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except OSError:
            return True  # gone
        state = stat.rsplit(")", 1)[1].split()[0]
        assert state == "Z", f"child {child} outlived its SIGKILLed parent (state {state})"
        return True  # exited, waiting to be reaped by init

    try:
        await eventually(child_gone, timeout=30)
    except AssertionError:
        os.kill(child, signal.SIGKILL)  # the test failed; do not leave the sleeper behind
        raise


UNRESOLVABLE = (
    "models: {m: {protocol: openai, versions: ['1']}}\n"
    "deployments:\n"
    "  - {name: d, model: m, version: '1', endpoints: ['127.0.0.1:9', 'no-such-host.invalid:80']}\n"
)


async def _run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "extproc", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    text = (await finish(proc, 120)).decode()
    return proc.returncode or 0, text


async def test_an_unresolvable_endpoint_is_one_clear_problem_in_every_command(
    tmp_path: Path,
) -> None:
    """check-config catches it (with its line); serve, explain and up say the same in one
    line each, never with a traceback."""
    port, mport, listen, admin = PORTS.take(4)
    path = tmp_path / "routes.yaml"
    path.write_text(
        f"listener: {{port: {port}, metrics_port: {mport}}}\n"
        f"envoy: {{listen_port: {listen}, admin_port: {admin}}}\n" + UNRESOLVABLE
    )
    want = "line 5: deployments[0].endpoints[1]: cannot resolve host 'no-such-host.invalid'"
    body = tmp_path / "body.json"
    body.write_text('{"model": "m", "messages": [{"role": "user", "content": "hi"}]}')
    for args in (
        ("check-config", str(path)),
        ("up", "--config", str(path)),
        ("explain", "--config", str(path), "--request", str(body)),
        ("serve", "--config", str(path)),
    ):
        code, text = await _run(*args)
        assert code == 1, (args, text)
        assert "Traceback" not in text, (args, text)
        if args[0] in ("check-config", "up"):
            assert want in text, (args, text)
        else:  # found while running: the same problem, with its key path
            assert "deployments[0].endpoints[1]: cannot resolve host" in text, (args, text)
