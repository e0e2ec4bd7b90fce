"""Router CPU spent scraping model-server metrics, at 16 and 64 endpoints.

Starts N real vLLM simulators (llm-d-inference-sim), runs the router's
:class:`~extproc.control.signals.scraper.MetricsScraper` against them in this process for
``--seconds`` at ``--interval-ms``, and reports this process's CPU as a share of one core
(the simulators' CPU is theirs, not counted) and per scrape.

    python -m loadtest.scrape_cost [--endpoints 16,64] [--interval-ms 100] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

from extproc.control.schema import SignalsConfig
from extproc.control.signals.scraper import MetricsScraper
from extproc.control.signals.targets import VLLM, ScrapeTarget
from extproc.core.signals import SignalBoard
from extproc.dev.inference_sim import InferenceSim, inference_sim_binary


async def measure(n: int, interval_ms: int, seconds: float, workdir: Path) -> None:
    binary = inference_sim_binary()
    if binary is None:
        raise SystemExit("no llm-d-inference-sim: run scripts/install-inference-sim")
    sims = [InferenceSim(binary, "chat", name=f"s{i}", log=workdir / f"s{i}.log")
            for i in range(n)]  # fmt: skip
    try:
        for chunk in range(0, n, 8):
            await asyncio.gather(*(s.start() for s in sims[chunk : chunk + 8]))
        board = SignalBoard("bench")
        scraper = MetricsScraper(board, SignalsConfig(scrape_interval_ms=interval_ms))
        scraper.set_targets(
            {s.address: ScrapeTarget(s.address, s.url + "/metrics", VLLM) for s in sims}
        )
        task = asyncio.create_task(scraper.run(), name="scrape")
        await asyncio.sleep(2)  # connections up
        cpu0, wall0, scrapes0 = time.process_time(), time.monotonic(), scraper.scrapes
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        rounds = scraper.scrapes - scrapes0
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        fresh = sum(1 for e in board.load.endpoints.values() if time.monotonic() - e.at < 1)
        print(
            f"{n:3d} endpoints every {interval_ms} ms: {100 * cpu / wall:5.1f}% of a core, "
            f"{cpu / max(rounds, 1) * 1e3:6.2f} ms CPU per round of {n} "
            f"({cpu / max(rounds * n, 1) * 1e6:5.0f} us per endpoint scrape), "
            f"{rounds / wall:4.1f} rounds/s, fresh {fresh}/{n}, errors "
            f"{sum(scraper.errors.values())}",
            flush=True,
        )
    finally:
        await asyncio.gather(*(s.stop() for s in sims), return_exceptions=True)


async def amain(sizes: list[int], interval_ms: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="scrape-cost-") as tmp:
        for n in sizes:
            await measure(n, interval_ms, seconds, Path(tmp))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoints", default="16,64")
    p.add_argument("--interval-ms", type=int, default=100)
    p.add_argument("--seconds", type=float, default=20.0)
    a = p.parse_args()
    sizes = [int(x) for x in a.endpoints.split(",") if x.strip()]
    asyncio.run(amain(sizes, a.interval_ms, a.seconds))


if __name__ == "__main__":
    main()
