"""Real model servers nobody here wrote, on loopback, for tests, the demo and benchmarks.

* :class:`~extproc.dev.inference_sim.InferenceSim` (its own module): llm-d's
  ``llm-d-inference-sim`` (a vLLM simulator: OpenAI chat, completions, embeddings,
  responses, ``/v1/models``, streaming, vLLM's metrics), built once by
  ``scripts/install-inference-sim``.
* :class:`KServeServer`: KServe's own ``ModelServer`` (PyPI ``kserve``) serving echo
  models (:mod:`extproc.dev.kserve_echo`), from the virtualenv ``scripts/install-kserve``
  makes.

Both are started as child processes (:class:`~extproc.ops.procs.ManagedProcess`: own
process group, killed if we die), wait until they answer, and stop with grace::

    async with KServeServer(["fraud"], workdir=tmp) as kserve:
        ...kserve.address...
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from extproc.dev.lifecycle import StartStop
from extproc.ops.procs import PORTS, ManagedProcess, wait_http_ok

KSERVE_VERSION = "0.21.0"
HOST = "127.0.0.1"


def _cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "model-router"


def kserve_python() -> Path | None:
    """``$KSERVE_PYTHON``, else the cached KServe virtualenv's python; None when neither."""
    env = os.environ.get("KSERVE_PYTHON")
    if env and os.access(env, os.X_OK):
        return Path(env)
    cached = _cache() / f"kserve-{KSERVE_VERSION}" / "bin" / "python"
    return cached if os.access(cached, os.X_OK) else None


class _Backend(StartStop):
    """A model server process on a loopback port, ready once ``health_path`` answers 200."""

    name = "backend"
    health_path = "/"

    def __init__(self, models: Sequence[str], workdir: Path, port: int | None = None) -> None:
        if not models:
            raise ValueError(f"{type(self).__name__} needs at least one model name")
        self.models = list(models)
        self.workdir = workdir
        self.port = port if port is not None else PORTS.take(1)[0]
        self.proc: ManagedProcess | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(address={self.address!r}, proc={self.proc!r})"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}-{self.port}.log"

    def argv(self) -> list[str]:
        raise NotImplementedError

    async def start(self, timeout_s: float = 120.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = ManagedProcess(self.name, self.argv(), log=self.log)
        await self.proc.start()
        try:
            await wait_http_ok(self.url + self.health_path, timeout_s, proc=self.proc)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self.proc is not None:
            await self.proc.stop(10)


class KServeServer(_Backend):
    """KServe's ``ModelServer`` with one echo model per name in ``models`` (names may
    contain ``/``), answering the Open Inference Protocol (v2) over HTTP on loopback."""

    name = "kserve"
    health_path = "/v2/health/ready"

    def __init__(
        self,
        models: Sequence[str],
        *,
        workdir: Path,
        port: int | None = None,
        python: Path | None = None,
    ) -> None:
        super().__init__(models, workdir, port)
        found = python or kserve_python()
        if found is None:
            raise FileNotFoundError(
                "no KServe virtualenv: run scripts/install-kserve or set KSERVE_PYTHON"
            )
        self.python = found

    def argv(self) -> list[str]:
        script = Path(__file__).with_name("kserve_echo.py")
        return [str(self.python), str(script), "--http-port", str(self.port), *self.models]
