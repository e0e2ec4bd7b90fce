"""A real single-node Consul agent on loopback, for the demo and the tests.

It runs as a server with a data directory (not ``-dev``), so a restart keeps the
catalog, as a production agent would. ``consul_binary`` finds the binary the same
way ``scripts/install-consul`` does.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from extproc.ops.procs import PORTS, ManagedProcess

CONSUL_VERSION = "1.22.6"


def consul_binary() -> Path | None:
    """``$CONSUL_BIN``, ``consul`` on PATH, or the cached build; None if none exists."""
    env = os.environ.get("CONSUL_BIN")
    if env and os.access(env, os.X_OK):
        return Path(env)
    found = shutil.which("consul")
    if found:
        return Path(found)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    cached = cache / "model-router" / f"consul-{CONSUL_VERSION}"
    return cached if os.access(cached, os.X_OK) else None


class ConsulAgent:
    def __init__(self, binary: Path, workdir: Path, *, config_files: tuple[Path, ...] = ()) -> None:
        self.binary = binary
        self.workdir = workdir
        self.config_files = config_files
        """Agent configuration files (service definitions...) it loads at start."""
        self.http_port = 0
        self._ports: list[int] = []
        self.proc: ManagedProcess | None = None

    def __repr__(self) -> str:
        return f"ConsulAgent(http=127.0.0.1:{self.http_port}, proc={self.proc!r})"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def argv(self) -> list[str]:
        if not self._ports:
            self._ports = PORTS.take(4)
            self.http_port = self._ports[0]
        http, serf_lan, serf_wan, server = self._ports
        return [
            str(self.binary), "agent", "-server", "-bootstrap-expect=1",
            "-node=model-router-dev", "-data-dir", str(self.workdir / "data"),
            "-bind=127.0.0.1", "-client=127.0.0.1", "-advertise=127.0.0.1",
            f"-http-port={http}", "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
            f"-serf-lan-port={serf_lan}", f"-serf-wan-port={serf_wan}",
            f"-server-port={server}", "-log-level=warn",
            "-hcl", "performance { raft_multiplier = 1 }",
            "-hcl", "disable_update_check = true",
            *(f"-config-file={f}" for f in self.config_files),
        ]  # fmt: skip

    async def start(self, timeout_s: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = ManagedProcess("consul", self.argv(), log=self.workdir / "consul.log")
        await self.proc.start()
        await self.wait_leader(timeout_s)

    async def stop(self) -> None:
        if self.proc is not None:
            await self.proc.stop(10)

    async def wait_leader(self, timeout_s: float = 30.0) -> float:
        """Seconds until the agent has a leader and answers catalog reads."""
        import asyncio

        start = time.monotonic()
        async with aiohttp.ClientSession(trust_env=False) as s:
            while True:
                if self.proc is not None and not self.proc.running:
                    log = (self.workdir / "consul.log").read_text()[-2000:]
                    raise RuntimeError(f"consul exited: {log}")
                try:
                    async with s.get(f"{self.url}/v1/status/leader") as r:
                        leader = await r.json() if r.status == 200 else ""
                    if leader:
                        async with s.get(f"{self.url}/v1/catalog/services") as r:
                            if r.status == 200:
                                return time.monotonic() - start
                except (aiohttp.ClientError, ValueError):
                    pass
                if time.monotonic() - start > timeout_s:
                    raise TimeoutError(f"consul at {self.url} has no leader after {timeout_s}s")
                await asyncio.sleep(0.1)

    async def _poll(
        self, path: str, holds: Callable[[Any], bool], timeout_s: float, interval_s: float
    ) -> Any:
        """GET ``path`` until ``holds(its JSON)``; that JSON, or ``TimeoutError`` with the
        last one (unreachable or not JSON: ``None``, tried again)."""
        import asyncio

        deadline = time.monotonic() + timeout_s
        last: Any = None
        async with aiohttp.ClientSession(trust_env=False) as s:
            while time.monotonic() < deadline:
                try:
                    async with s.get(self.url + path) as r:
                        last = await r.json() if r.status == 200 else None
                except (aiohttp.ClientError, ValueError):
                    last = None
                if last is not None and holds(last):
                    return last
                await asyncio.sleep(interval_s)
        raise TimeoutError(
            f"GET {path} on consul at {self.url}: not yet after {timeout_s}s: {last}"
        )

    async def wait_checks_passing(self, service_ids: Collection[str], timeout_s: float) -> None:
        """Until every check of these services passes in the catalog (Consul starts a
        check critical until its first run passes, so a router started before would see
        none healthy). The catalog, not the agent's own view (``/v1/agent/checks``): the
        router watches the catalog, which the agent's anti-entropy sync fills a moment
        later, and a router started in between saw a model with no deployments."""

        def all_passing(checks: list[dict[str, Any]]) -> bool:
            states: dict[str, set[str]] = {}
            for c in checks:  # every check of a service must pass
                if c.get("ServiceID"):
                    states.setdefault(c["ServiceID"], set()).add(c["Status"])
            return all(states.get(sid) == {"passing"} for sid in service_ids)

        await self._poll("/v1/health/state/any", all_passing, timeout_s, 0.2)

    async def _put(self, path: str, body: Any = None) -> None:
        async with (
            aiohttp.ClientSession(trust_env=False) as s,
            s.put(self.url + path, data=None if body is None else json.dumps(body)) as r,
        ):
            if r.status != 200:
                raise RuntimeError(f"PUT {path}: {r.status} {await r.text()}")

    async def register(
        self,
        service_id: str,
        name: str,
        port: int,
        meta: Mapping[str, str],
        *,
        health_url: str | None = None,
        interval: str = "1s",
        tags: tuple[str, ...] = ("model-router",),
        address: str = "127.0.0.1",
    ) -> None:
        body: dict[str, Any] = {
            "ID": service_id, "Name": name, "Tags": list(tags), "Address": address,
            "Port": port, "Meta": dict(meta),
        }  # fmt: skip
        if health_url is not None:
            body["Check"] = {
                "HTTP": health_url, "Interval": interval, "Timeout": "1s",
                "Status": "passing", "DeregisterCriticalServiceAfter": "10m",
            }  # fmt: skip
        await self._put("/v1/agent/service/register", body)
        await self._wait_in_catalog(name, service_id)

    async def _wait_in_catalog(self, name: str, service_id: str, timeout_s: float = 30.0) -> None:
        """Until the catalog lists the instance: the agent registers it at once but the
        catalog (what a router watches) gets it from the agent's sync a moment later."""
        await self._poll(
            f"/v1/catalog/service/{name}",
            lambda entries: any(e.get("ServiceID") == service_id for e in entries),
            timeout_s,
            0.05,
        )

    async def deregister(self, service_id: str) -> None:
        await self._put(f"/v1/agent/service/deregister/{service_id}")

    async def maintenance(self, service_id: str, enable: bool) -> None:
        await self._put(f"/v1/agent/service/maintenance/{service_id}?enable={str(enable).lower()}")
