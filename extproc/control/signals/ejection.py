"""Passive ejection: endpoints that keep failing (as Envoy's access log reports) are
left out by the ``not_ejected`` filter for a cooldown that doubles on each repeat.

Never more than ``max_share`` of a deployment's endpoints are out at once: a deployment
that fails as a whole is the registry's and health checks' business, not a reason to
route nowhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from extproc.control.schema import EjectionConfig
from extproc.core.signals import SignalBoard
from extproc.core.snapshot import Snapshot

log = logging.getLogger("extproc.control.signals")


class EjectionTracker:
    def __init__(self, board: SignalBoard, config: EjectionConfig) -> None:
        self.board = board
        self.config = config
        self._failures: dict[str, int] = {}
        self._times: dict[str, int] = {}
        """How often each endpoint was ejected (the cooldown doubles)."""
        self._successes: dict[str, int] = {}
        self._deployment: Mapping[str, str] = {}
        self._sizes: Mapping[str, int] = {}
        self.ejections = 0

    def __repr__(self) -> str:
        return f"EjectionTracker(ejected={sorted(self.board.ejected)}, total={self.ejections})"

    @property
    def deployments(self) -> Mapping[str, str]:
        """Endpoint -> its deployment, in the current registry snapshot."""
        return self._deployment

    def set_snapshot(self, snapshot: Snapshot) -> None:
        self._deployment = {
            e.address: d.name
            for m in snapshot.models.values()
            for d in m.deployments
            for e in d.endpoints
        }
        self._sizes = {
            d.name: len(d.endpoints) for m in snapshot.models.values() for d in m.deployments
        }

    RESET_AFTER = 100
    """Successes in a row after which an endpoint's cooldown starts from ``base_s`` again."""

    def outcome(self, address: str, failed: bool, now: float | None = None) -> None:
        if not failed:
            self._failures.pop(address, None)
            if address in self._times:
                ok = self._successes.get(address, 0) + 1
                if ok >= self.RESET_AFTER:
                    self._times.pop(address, None)
                    self._successes.pop(address, None)
                else:
                    self._successes[address] = ok
            return
        self._successes.pop(address, None)
        n = self._failures.get(address, 0) + 1
        self._failures[address] = n
        if n >= self.config.consecutive_failures:
            self._eject(address, time.monotonic() if now is None else now)

    def _eject(self, address: str, now: float) -> None:
        current = {a: u for a, u in self.board.ejected.items() if u > now}
        if address in current:
            return
        dep = self._deployment.get(address)
        if dep is not None:
            out = sum(1 for a in current if self._deployment.get(a) == dep)
            if out + 1 > self.config.max_share * self._sizes.get(dep, 1):
                return  # the deployment keeps most of its endpoints
        times = self._times.get(address, 0)
        cooldown = min(self.config.base_s * (2**times), self.config.max_s)
        self._times[address] = times + 1
        self._failures.pop(address, None)
        current[address] = now + cooldown
        self.board.ejected = current
        self.ejections += 1
        log.warning("endpoint %s ejected for %.0fs (failing)", address, cooldown)

    def prune(self, now: float | None = None) -> None:
        """Drop expired ejections from the board (the filter ignores them anyway)."""
        t = time.monotonic() if now is None else now
        if any(u <= t for u in self.board.ejected.values()):
            self.board.ejected = {a: u for a, u in self.board.ejected.items() if u > t}
