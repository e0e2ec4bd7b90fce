"""Every scheduling plugin, by kind and registered name (the one place to register one)."""

from __future__ import annotations

from collections.abc import Mapping

from extproc.core.scheduling.filters.capabilities import Capabilities
from extproc.core.scheduling.filters.routable import Routable
from extproc.core.scheduling.filters.subset import Subset
from extproc.core.scheduling.filters.version import Version
from extproc.core.scheduling.framework import Plugin
from extproc.core.scheduling.pickers.max_score import MaxScore
from extproc.core.scheduling.pickers.round_robin import RoundRobin
from extproc.core.scheduling.pickers.weighted_random import WeightedRandom
from extproc.core.scheduling.scorers.deployment_weight import DeploymentWeight

PLUGINS: tuple[type[Plugin], ...] = (
    Routable,
    Version,
    Capabilities,
    Subset,
    DeploymentWeight,
    RoundRobin,
    WeightedRandom,
    MaxScore,
)


def by_kind(kind: str) -> Mapping[str, type[Plugin]]:
    """The plugins of one kind (``filter``, ``scorer``, ``picker``) by name."""
    return {p.name: p for p in PLUGINS if p.kind == kind}
