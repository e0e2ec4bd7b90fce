"""Every scheduling plugin, by kind and registered name (the one place to register one)."""

from __future__ import annotations

from collections.abc import Mapping

from extproc.core.scheduling.filters.capabilities import Capabilities
from extproc.core.scheduling.filters.not_ejected import NotEjected
from extproc.core.scheduling.filters.not_saturated import NotSaturated
from extproc.core.scheduling.filters.routable import Routable
from extproc.core.scheduling.filters.subset import Subset
from extproc.core.scheduling.filters.version import Version
from extproc.core.scheduling.framework import Plugin
from extproc.core.scheduling.pickers.max_score import MaxScore
from extproc.core.scheduling.pickers.power_of_two import PowerOfTwo
from extproc.core.scheduling.pickers.round_robin import RoundRobin
from extproc.core.scheduling.pickers.weighted_random import WeightedRandom
from extproc.core.scheduling.scorers.cost import Cost
from extproc.core.scheduling.scorers.deployment_weight import DeploymentWeight
from extproc.core.scheduling.scorers.kv_cache import KvCache
from extproc.core.scheduling.scorers.latency import Latency
from extproc.core.scheduling.scorers.least_busy_time import LeastBusyTime
from extproc.core.scheduling.scorers.least_inflight import LeastInflight
from extproc.core.scheduling.scorers.lora_affinity import LoraAffinity
from extproc.core.scheduling.scorers.prefix_cache import PrefixCache
from extproc.core.scheduling.scorers.queue import QueueDepth

PLUGINS: tuple[type[Plugin], ...] = (
    Routable,
    Version,
    Capabilities,
    Subset,
    NotEjected,
    NotSaturated,
    DeploymentWeight,
    LeastInflight,
    LeastBusyTime,
    QueueDepth,
    KvCache,
    Latency,
    PrefixCache,
    LoraAffinity,
    Cost,
    RoundRobin,
    WeightedRandom,
    MaxScore,
    PowerOfTwo,
)


def by_kind(kind: str) -> Mapping[str, type[Plugin]]:
    """The plugins of one kind (``filter``, ``scorer``, ``picker``) by name."""
    return {p.name: p for p in PLUGINS if p.kind == kind}
