"""``--workers N``: N router processes, each on its own port, under one parent.

Envoy multiplexes every ext_proc stream of one Envoy worker over a single HTTP/2
connection, so N processes sharing one port with SO_REUSEPORT would not share
load. Each worker listens on ``port + i``; Envoy's ext_proc cluster lists them all.
The parent restarts a worker that dies, forwards SIGHUP (reload) and, on SIGTERM
or SIGINT, stops every worker gracefully.

Workers die with their supervisor (Linux parent-death signal: SIGTERM, so they drain),
even when it is SIGKILLed, so they never hold its ports as orphans. A worker that
cannot listen (its port stays taken after bounded retries) exits with
``EXIT_PORT_IN_USE``; the supervisor then stops everything and exits with that code
instead of restarting it forever. Every accepted routing file is kept in a last-good
file that restarted workers start on when the routing file on disk does not load.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import tempfile
import time
from pathlib import Path

from extproc.ops.procs import die_with_parent, router_argv
from extproc.server.app import EXIT_PORT_IN_USE

log = logging.getLogger("extproc.ops.supervisor")


class Backoff:
    """Restart delays: at once the first time, then doubling to ``cap``; back to the start
    once a process has run ``healthy_s``."""

    def __init__(self, cap: float = 10.0, healthy_s: float = 30.0) -> None:
        self.cap = cap
        self.healthy_s = healthy_s
        self.failures = 0

    def __repr__(self) -> str:
        return f"Backoff(failures={self.failures}, cap={self.cap})"

    def after(self, ran_s: float) -> float:
        """The delay before the next start of a process that ran ``ran_s`` seconds."""
        if ran_s >= self.healthy_s:
            self.failures = 0
        delay = 0.0 if self.failures == 0 else min(self.cap, 0.25 * 2**self.failures)
        self.failures += 1
        return delay


class Supervisor:
    def __init__(
        self,
        config_path: Path,
        workers: int,
        *,
        grace_s: float,
        log_level: str,
        last_good: Path | None = None,
    ) -> None:
        self.config_path = config_path
        self.workers = workers
        self.grace_s = grace_s
        self.log_level = log_level
        self.last_good = last_good
        self.exit_code = 0
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._stopping = False
        self._stop = asyncio.Event()

    def __repr__(self) -> str:
        pids = {i: p.pid for i, p in self._procs.items()}
        return (
            f"Supervisor(workers={self.workers}, pids={pids}, last_good={self.last_good}, "
            f"stopping={self._stopping})"
        )

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        argv = router_argv(
            self.config_path,
            worker_index=index,
            log_level=self.log_level,
            last_good=self.last_good,
        )
        proc = await asyncio.create_subprocess_exec(*argv, preexec_fn=die_with_parent)
        self._procs[index] = proc
        log.info("worker started", extra={"worker": index, "pid": proc.pid})
        return proc

    async def _keep_alive(self, index: int) -> None:
        backoff = Backoff()
        while not self._stopping:
            started = time.monotonic()
            proc = await self._spawn(index)
            code = await proc.wait()
            if self._stopping:
                return
            if code == EXIT_PORT_IN_USE:
                log.error(
                    "worker %d cannot listen (its port is in use, see its error above); "
                    "stopping every worker",
                    index,
                    extra={"worker": index},
                )
                self.exit_code = EXIT_PORT_IN_USE
                self._stop.set()
                return
            delay = backoff.after(time.monotonic() - started)
            log.error(
                "worker exited; restarting",
                extra={"worker": index, "code": code, "delay_s": delay},
            )
            await asyncio.sleep(delay)

    def _signal_all(self, sig: int) -> None:
        for proc in self._procs.values():
            if proc.returncode is None:
                proc.send_signal(sig)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._signal_all(signal.SIGHUP))
        own_dir = None
        if self.last_good is None:
            own_dir = Path(tempfile.mkdtemp(prefix="model-router-last-good-"))
            self.last_good = own_dir / "routes.yaml"
        try:
            for i in range(self.workers):
                self._tasks[i] = asyncio.create_task(self._keep_alive(i), name=f"worker-{i}")
            await self._stop.wait()
            await self._stop_workers()
        finally:
            if own_dir is not None:
                shutil.rmtree(own_dir, ignore_errors=True)
        return self.exit_code

    async def _stop_workers(self) -> None:
        self._stopping = True
        self._signal_all(signal.SIGTERM)
        waits = [p.wait() for p in self._procs.values() if p.returncode is None]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout=self.grace_s + 5)
        except TimeoutError:
            log.error("workers did not stop in time; killing them")
            self._signal_all(signal.SIGKILL)
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
