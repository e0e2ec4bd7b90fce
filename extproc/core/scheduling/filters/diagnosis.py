"""Why a model has no routable deployment for a request: the 503 message the deployment
filters (routable, version, capabilities) share, naming every reason at once."""

from __future__ import annotations

from extproc.core import capabilities
from extproc.core.capabilities import Requirements
from extproc.core.errors import shown
from extproc.core.snapshot import Deployment, ModelEntry


def matches(dep: Deployment, version: str | None, caps: Requirements) -> bool:
    if version is not None and dep.version != version:
        return False
    return capabilities.satisfied(caps, dep.tags)


def no_routable_deployment(model: ModelEntry, version: str | None, caps: Requirements) -> str:
    deps = model.deployments
    want = f"model {model.name!r}" + (f" version {shown(version)}" if version else "")
    if not deps:
        return f"{want} has no deployments"
    wrong_version = sum(1 for d in deps if version is not None and d.version != version)
    missing = sum(
        1
        for d in deps
        if (version is None or d.version == version) and not capabilities.satisfied(caps, d.tags)
    )
    not_routable = [d for d in deps if matches(d, version, caps) and not d.routable]
    parts = []
    if wrong_version:
        parts.append(f"{wrong_version} of another version")
    if missing:
        parts.append(f"{missing} without capabilities {capabilities.describe(caps)}")
    for d in not_routable:
        why = (
            "disabled" if not d.enabled else "weight 0" if d.weight <= 0 else "no healthy endpoint"
        )
        states = ", ".join(f"{a} {s}" for a, s in d.excluded)
        parts.append(f"{d.name}: {why}" + (f" ({states})" if states else ""))
    return f"no routable deployment for {want}: " + "; ".join(parts)
