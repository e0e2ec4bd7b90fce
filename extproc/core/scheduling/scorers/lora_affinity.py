"""Prefers endpoints that report the requested model loaded as a LoRA adapter (vLLM's
``vllm:lora_requests_info`` ``running_lora_adapters`` / ``waiting_lora_adapters``):
1.0 where it is, else 0.0."""

from __future__ import annotations

from extproc.core.scheduling.framework import Candidate, SchedulingRequest, Scorer


class LoraAffinity(Scorer):
    name = "lora_affinity"

    def score(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> list[float]:
        load = req.signals.load
        model = req.request.model
        out = []
        for c in candidates:
            ep = load.get(c.address)
            out.append(1.0 if ep is not None and model in ep.adapters else 0.0)
        return out
