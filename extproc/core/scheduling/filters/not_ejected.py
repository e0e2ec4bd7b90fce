"""Leaves out endpoints passively ejected for failing (access-log outcomes: consecutive
5xx or connect failures), until their cooldown ends. If every candidate is ejected it
keeps them all rather than fail the request (Envoy's panic mode does the same)."""

from __future__ import annotations

from extproc.core.scheduling.framework import Candidate, Filter, SchedulingRequest


class NotEjected(Filter):
    name = "not_ejected"

    def applies(self, req: SchedulingRequest) -> bool:
        return bool(req.signals.ejected)

    def filter(
        self, req: SchedulingRequest, candidates: tuple[Candidate, ...]
    ) -> tuple[Candidate, ...]:
        ejected, now = req.signals.ejected, req.now
        if not ejected:  # the usual case: the same tuple, so later steps' memos still hit
            return candidates
        kept = tuple(c for c in candidates if ejected.get(c.address, 0.0) <= now)
        return kept if kept and len(kept) < len(candidates) else candidates
