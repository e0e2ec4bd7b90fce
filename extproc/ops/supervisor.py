"""``--workers N``: N router processes, each on its own port, under one parent.

Envoy multiplexes every ext_proc stream of one Envoy worker over a single HTTP/2
connection, so N processes sharing one port with SO_REUSEPORT would not share
load. Each worker listens on ``port + i``; Envoy's ext_proc cluster lists them all.
The parent restarts a worker that dies, forwards SIGHUP (reload) and, on SIGTERM
or SIGINT, stops every worker gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

from extproc.ops.procs import router_argv

log = logging.getLogger("extproc.ops.supervisor")


class Supervisor:
    def __init__(self, config_path: Path, workers: int, *, grace_s: float, log_level: str) -> None:
        self.config_path = config_path
        self.workers = workers
        self.grace_s = grace_s
        self.log_level = log_level
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._stopping = False
        self._stop = asyncio.Event()

    def __repr__(self) -> str:
        pids = {i: p.pid for i, p in self._procs.items()}
        return f"Supervisor(workers={self.workers}, pids={pids}, stopping={self._stopping})"

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        argv = router_argv(self.config_path, worker_index=index, log_level=self.log_level)
        proc = await asyncio.create_subprocess_exec(*argv)
        self._procs[index] = proc
        log.info("worker started", extra={"worker": index, "pid": proc.pid})
        return proc

    async def _keep_alive(self, index: int) -> None:
        backoff = 0.5
        while not self._stopping:
            started = time.monotonic()
            proc = await self._spawn(index)
            code = await proc.wait()
            if self._stopping:
                return
            log.error("worker exited; restarting", extra={"worker": index, "code": code})
            if time.monotonic() - started > 30:
                backoff = 0.5
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def _signal_all(self, sig: int) -> None:
        for proc in self._procs.values():
            if proc.returncode is None:
                proc.send_signal(sig)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._signal_all(signal.SIGHUP))
        for i in range(self.workers):
            self._tasks[i] = asyncio.create_task(self._keep_alive(i), name=f"worker-{i}")
        await self._stop.wait()
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
        return 0
