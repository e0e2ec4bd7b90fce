"""The routing file's ``admission`` section and models' objectives, compiled."""

from __future__ import annotations

from extproc.control.schema import Config
from extproc.core.admission import Admission, PriorityClass


def compile_admission(config: Config) -> Admission | None:
    """``None`` when admission is off (``admission.enabled: false``)."""
    a = config.admission
    if not a.enabled:
        return None
    classes = {name: PriorityClass(name, c.max_load) for name, c in a.classes.items()}
    return Admission(
        classes=classes,
        default=classes[a.default_class],
        header=a.priority_header,
        budget_header=a.budget_header,
        retry_after_s=a.retry_after_s,
        queue_saturation=a.queue_saturation,
        kv_saturation=a.kv_saturation,
        on_budget_miss=a.on_budget_miss,
        objectives={name: m.objective.ttft_ms for name, m in config.models.items() if m.objective},
        deciders=config.listener.workers + len(config.envoy.routers),
    )
