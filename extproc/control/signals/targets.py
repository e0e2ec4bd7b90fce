"""Which endpoints to scrape, where, and which metric names mean what.

Only endpoints of models whose profile has a scorer that reads scraped load (queue,
kv_cache, lora_affinity) are scraped. Names by server family: vLLM (and the vLLM
simulator, SGLang's vLLM-compatible names), Triton / KServe, or a custom mapping in the
routing file (``deployments[].metrics``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from extproc.control.compile import CompiledRouting
from extproc.control.schema import MetricsSourceConfig
from extproc.core.snapshot import Snapshot

LOAD_SCORERS = frozenset({"queue", "kv_cache", "lora_affinity"})


@dataclass(frozen=True, slots=True)
class Families:
    """Metric names for each signal (first found wins where several are listed)."""

    waiting: tuple[str, ...] = ()
    running: tuple[str, ...] = ()
    kv_usage: tuple[str, ...] = ()
    kv_percent: bool = False
    """The KV gauge is 0-100 rather than 0-1."""
    lora: str | None = None

    @property
    def all(self) -> tuple[str, ...]:
        lora = (self.lora,) if self.lora else ()
        return (*self.waiting, *self.running, *self.kv_usage, *lora)


VLLM = Families(
    waiting=("vllm:num_requests_waiting",),
    running=("vllm:num_requests_running",),
    kv_usage=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    lora="vllm:lora_requests_info",
)
TRITON = Families(
    waiting=("nv_inference_pending_request_count",),
    running=(),
    kv_usage=(),
)
"""Triton reports queued requests; it has no KV cache gauge (KV scorers score it 0)."""


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    address: str
    """The endpoint (``ip:port``) the load is about."""
    url: str
    families: Families

    def __repr__(self) -> str:
        return f"ScrapeTarget({self.address} <- {self.url})"


def families_for(protocol: str, cfg: MetricsSourceConfig) -> Families:
    fmt = cfg.format or ("triton" if protocol == "kserve_v2" else "vllm")
    if fmt == "vllm":
        return VLLM
    if fmt == "triton":
        return TRITON
    return Families(
        waiting=(cfg.waiting,) if cfg.waiting else (),
        running=(cfg.running,) if cfg.running else (),
        kv_usage=(cfg.kv_usage,) if cfg.kv_usage else (),
    )


def scrape_targets(compiled: CompiledRouting, snapshot: Snapshot) -> Mapping[str, ScrapeTarget]:
    """Every endpoint to scrape for this routing file and registry snapshot."""
    sources = {d.name: d.metrics for d in compiled.config.deployments}
    out: dict[str, ScrapeTarget] = {}
    for model in snapshot.models.values():
        profile = compiled.scheduler.profile_for(model.name)
        if not any(ws.scorer.name in LOAD_SCORERS for ws in profile.scorers):
            continue
        for dep in model.deployments:
            cfg = sources.get(dep.name, MetricsSourceConfig())
            if not cfg.enabled:
                continue
            families = families_for(model.protocol, cfg)
            for ep in dep.endpoints:
                host, _, port = ep.address.rpartition(":")
                url = f"http://{host}:{cfg.port or port}{cfg.path}"
                out[ep.address] = ScrapeTarget(ep.address, url, families)
    return out
