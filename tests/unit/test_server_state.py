"""Server state bookkeeping that needs no sockets."""

from __future__ import annotations

from extproc.config import parse_config
from extproc.flow import RouterState
from extproc.policies.scheduler import Scheduler
from extproc.registry import Snapshot
from extproc.registry.consul import ConsulRegistry
from extproc.server import Server

CONSUL = "registry: {type: consul}\nmodels: {m: {protocol: openai, versions: ['1']}}\n"


def test_snapshot_from_a_registry_not_in_use_is_ignored_even_before_sync() -> None:
    config = parse_config(CONSUL)
    server = Server(config)
    unsynced = ConsulRegistry(config, "<test>")  # current registry, no snapshot yet
    server._state = RouterState(config, unsynced, Scheduler(config))
    # Another registry (e.g. one being built by a reload) publishes: no crash, no publish.
    server._on_snapshot(Snapshot(models={}, source="other", generation=7))
    assert server.metrics.config_generation._value.get() == 0
    assert server._staleness() == 0.0
