"""A real ``redis-server`` (Debian's package, installed by ``scripts/install-redis``) as
a child process for tests, the demo and benchmarks: loopback only, a free port, its
working directory under the caller's temporary directory, no persistence (quota counts
are one-minute windows: a restarted Redis starts empty, which the router must survive).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

from extproc.dev.lifecycle import StartStop
from extproc.ops.procs import PORTS, ManagedProcess


def redis_server_binary() -> Path | None:
    """``$REDIS_SERVER``, else ``redis-server`` on PATH; None if neither exists."""
    env = os.environ.get("REDIS_SERVER")
    if env and os.access(env, os.X_OK):
        return Path(env)
    found = shutil.which("redis-server")
    return Path(found) if found else None


class RedisServer(StartStop):
    """One ``redis-server`` on ``127.0.0.1`` and a free port (kept across restarts)."""

    def __init__(self, binary: Path, workdir: Path, *, name: str = "redis") -> None:
        self.binary = binary
        self.workdir = workdir
        (self.port,) = PORTS.take(1)
        argv = [
            str(binary), "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(workdir), "--save", "", "--appendonly", "no",
            "--protected-mode", "yes", "--daemonize", "no",
        ]  # fmt: skip
        self.process = ManagedProcess(name, argv, log=workdir / f"{name}.log")

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, {self.process!r})"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout_s: float = 15.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        await self.process.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:  # ready when it answers PING
            if not self.process.running:
                raise RuntimeError(f"redis-server exited: {self.process.cause()}")
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                pass
            else:
                try:
                    writer.write(b"PING\r\n")
                    await writer.drain()
                    if (await reader.readline()).startswith(b"+PONG"):
                        return
                finally:
                    writer.close()
            if loop.time() > deadline:
                raise TimeoutError(f"redis-server on port {self.port} did not answer PING")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await self.process.stop(5)

    def kill(self) -> None:
        """SIGKILL (an outage, not a shutdown)."""
        self.process.signal(signal.SIGKILL)
