"""llm-d-inference-sim, llm-d's vLLM simulator (an OpenAI-compatible server nobody here
wrote), as a child process for tests, the demo and benchmarks.

Built once by ``scripts/install-inference-sim`` (pinned, from the Go module proxy) and
found through ``$INFERENCE_SIM_BIN`` or the cache. It is always started with
``--force-dummy-tokenizer`` (it would otherwise fetch a tokenizer from a model hub).
It exports vLLM's metric names; ``--fake-metrics`` and ``POST /admin/config`` set them,
which makes load-aware tests deterministic. It has no option to bind one address: it
listens on every interface, on a port we pick.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from extproc.dev.lifecycle import StartStop
from extproc.ops.procs import PORTS, ManagedProcess, wait_http_ok

VERSION = "0.10.2"


def inference_sim_binary() -> Path | None:
    """``$INFERENCE_SIM_BIN``, else the cached build; None if neither exists."""
    env = os.environ.get("INFERENCE_SIM_BIN")
    if env and os.access(env, os.X_OK):
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    cached = cache / "model-router" / f"llm-d-inference-sim-{VERSION}"
    return cached if os.access(cached, os.X_OK) else None


class InferenceSim(StartStop):
    """One simulator serving ``model`` (and the ``served`` names, if given) on a free
    loopback-reachable port; ``mode`` ``echo`` makes answers repeat the prompt
    (deterministic), the default ``random`` makes up text."""

    def __init__(
        self,
        binary: Path,
        model: str,
        *,
        name: str = "",
        log: Path | None = None,
        ttft_ms: int = 0,
        itl_ms: int = 0,
        max_num_seqs: int = 5,
        time_factor_under_load: float = 1.0,
        fake_metrics: dict[str, Any] | None = None,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
        served: Sequence[str] = (),
        mode: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.binary = binary
        self.model = model
        self.name = name or model
        (self.port,) = PORTS.take(1)
        argv = [
            str(binary), "--port", str(self.port), "--model", model, "--force-dummy-tokenizer",
            "--time-to-first-token", f"{ttft_ms}ms", "--inter-token-latency", f"{itl_ms}ms",
            "--max-num-seqs", str(max_num_seqs),
            "--time-factor-under-load", str(time_factor_under_load),
            "--enable-request-id-headers",
        ]  # fmt: skip
        if served:
            argv += ["--served-model-name", *served]
        if mode is not None:
            argv += ["--mode", mode]
        if seed is not None:
            argv += ["--seed", str(seed)]
        if fake_metrics is not None:
            argv += ["--fake-metrics", json.dumps(fake_metrics)]
        argv += extra or []
        # Its KV-cache events need POD_IP (``--enable-kvcache``); set it to loopback.
        full_env = {**os.environ, **env} if env else None
        self.process = ManagedProcess(f"sim-{self.name}", argv, env=full_env, log=log)

    def __repr__(self) -> str:
        return (
            f"InferenceSim({self.name!r}, model={self.model!r}, port={self.port}, {self.process!r})"
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    async def start(self, timeout_s: float = 30.0) -> None:
        await self.process.start()
        await wait_http_ok(self.url + "/health", timeout_s=timeout_s, proc=self.process)

    async def stop(self) -> None:
        await self.process.stop(5)

    async def set_fake_metrics(self, metrics: dict[str, Any]) -> None:
        """Replace the reported metrics (``running-requests``, ``waiting-requests``,
        ``kv-cache-usage``, ``loras``...)."""
        async with (
            aiohttp.ClientSession(trust_env=False) as s,
            s.post(self.url + "/admin/config", json={"fake-metrics": metrics}) as r,
        ):
            if r.status != 200:
                raise RuntimeError(f"{self.name}: /admin/config {r.status}: {await r.text()}")

    async def metrics(self) -> str:
        async with (
            aiohttp.ClientSession(trust_env=False) as s,
            s.get(self.url + "/metrics") as r,
        ):
            return await r.text()
