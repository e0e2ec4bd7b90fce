"""The Consul watch loop against a scripted client: index handling after errors and the
staleness the registry reports (no Consul here; tests/integration has the real one)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from extproc.control.registry import consul as consul_mod
from extproc.control.registry.base import RegistryInputs
from extproc.control.registry.consul import ConsulRegistry
from extproc.control.registry.consul_api import ConsulUnavailable
from extproc.control.schema import ConsulConfig


class ScriptedConsul:
    """Answers blocking queries from a script; records the index of every query."""

    def __init__(self, script: list[tuple[Any, int] | Exception]) -> None:
        self.script = script
        self.indexes: list[int] = []
        self.done = asyncio.Event()

    async def blocking_get(self, path: str, index: int, wait_s: int) -> tuple[Any, int]:
        self.indexes.append(index)
        if not self.script:
            self.done.set()
            await asyncio.Event().wait()  # parked, as a blocking query is
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def _registry() -> ConsulRegistry:
    inputs = RegistryInputs("<test>", {}, (), frozenset())
    return ConsulRegistry(ConsulConfig(wait_s=300), inputs)


async def test_after_an_error_the_next_query_does_not_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Consul restarted: its index is now lower than the one we held. Carrying the old index
    would park the query for the whole wait (300 s here); after an error the watch starts
    over from index 0, which answers at once."""
    monkeypatch.setattr(consul_mod.random, "uniform", lambda a, b: 0.0)
    client = ScriptedConsul([({}, 900), ConsulUnavailable("refused"), ({}, 12)])
    registry = _registry()
    registry._client = client  # type: ignore[assignment]
    task = asyncio.create_task(registry._watch_catalog(), name="watch")
    try:
        await asyncio.wait_for(client.done.wait(), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert client.indexes == [0, 900, 0, 12]


def test_staleness_is_the_age_since_the_watch_broke(monkeypatch: pytest.MonkeyPatch) -> None:
    """A blocking query parked for 25 s is fresh until Consul goes away; the staleness
    during an outage is the outage's age, not the time since the query last returned."""
    now = [1000.0]
    monkeypatch.setattr(consul_mod.time, "monotonic", lambda: now[0])
    registry = _registry()
    registry._ok("catalog")
    registry._ok("chat")
    now[0] += 25  # both queries parked, in sync
    assert registry.staleness_s == 0.0
    registry._failed("catalog", ConsulUnavailable("refused"))
    now[0] += 1
    registry._failed("chat", ConsulUnavailable("refused"))
    now[0] += 5
    assert registry.staleness_s == 6.0  # since the first watch broke
    registry._failed("catalog", ConsulUnavailable("refused"))  # a retry keeps its start
    assert registry.staleness_s == 6.0
    registry._ok("catalog")
    assert registry.staleness_s == 5.0
    registry._ok("chat")
    assert registry.staleness_s == 0.0


def _entry(status: str) -> dict[str, Any]:
    return {
        "Service": {"ID": "chat-1", "Address": "127.0.0.1", "Port": 9000,
                    "Meta": {"version": "1"}},
        "Checks": [{"CheckID": "serfHealth", "Status": "passing"},
                   {"CheckID": "service:chat-1", "Status": status}],
    }  # fmt: skip


def _routable(registry: ConsulRegistry) -> bool:
    snapshot = registry.snapshot
    assert snapshot is not None
    return any(d.routable for d in snapshot.models["chat"].deployments)


async def _answered(registry: ConsulRegistry, status: str) -> None:
    registry._services["chat"] = [_entry(status)]
    await registry._rebuild()


@pytest.mark.parametrize("grace", [10.0, 0.0])
async def test_a_model_emptied_by_consul_coming_back_keeps_its_instances_for_the_grace(
    grace: float,
) -> None:
    """Consul lost its state: when it answers again the instance is registered anew and its
    check is critical until it first runs. Within ``recovery_grace_s`` the model keeps the
    instances it had (shown in describe) instead of answering 503; once the grace is over,
    or with a grace of 0, the live answer wins. Without an outage a critical check removes
    the instance at once."""
    inputs = RegistryInputs("<test>", {}, (), frozenset())
    registry = ConsulRegistry(ConsulConfig(recovery_grace_s=grace), inputs)
    parked = asyncio.create_task(asyncio.Event().wait(), name="parked-watch")
    registry._watches["chat"] = parked
    registry._catalog_seen = True
    try:
        await _answered(registry, "passing")
        assert _routable(registry)
        await _answered(registry, "critical")
        assert not _routable(registry)  # no outage: the live answer at once
        await _answered(registry, "passing")

        registry._failed("chat", ConsulUnavailable("refused"))
        registry._ok("chat")  # Consul answers again
        await _answered(registry, "critical")
        assert _routable(registry) is (grace > 0)
        assert registry.describe()["held_over"] == ({"chat": ["1"]} if grace else {})
        if grace:
            assert registry._recovered_at is not None
            registry._recovered_at -= grace  # the grace is over
            await registry._rebuild()
            assert not _routable(registry)
            assert registry.describe()["held_over"] == {}
    finally:
        await registry.stop()
    assert parked.cancelled()


async def test_the_grace_holds_a_version_left_without_instances_while_another_came_back() -> None:
    """Version 1's instance re-registered and passes; version 2's is still critical: a
    request pinned to version 2 keeps its last known instance during the grace."""
    inputs = RegistryInputs("<test>", {}, (), frozenset())
    registry = ConsulRegistry(ConsulConfig(recovery_grace_s=10), inputs)
    parked = asyncio.create_task(asyncio.Event().wait(), name="parked-watch")
    registry._watches["chat"] = parked
    registry._catalog_seen = True

    def two(v2_status: str) -> list[dict[str, Any]]:
        v1, v2 = _entry("passing"), _entry(v2_status)
        v2["Service"] = {**v2["Service"], "ID": "chat-2", "Port": 9001, "Meta": {"version": "2"}}
        v2["Checks"] = [v2["Checks"][0], {"CheckID": "service:chat-2", "Status": v2_status}]
        return [v1, v2]

    def routable_versions() -> set[str]:
        snapshot = registry.snapshot
        assert snapshot is not None
        return {d.version for d in snapshot.models["chat"].deployments if d.routable}

    try:
        registry._services["chat"] = two("passing")
        await registry._rebuild()
        assert routable_versions() == {"1", "2"}
        registry._failed("chat", ConsulUnavailable("refused"))
        registry._ok("chat")
        registry._services["chat"] = two("critical")
        await registry._rebuild()
        assert routable_versions() == {"1", "2"}
        assert registry.describe()["held_over"] == {"chat": ["2"]}
        snapshot = registry.snapshot
        assert snapshot is not None
        ids = [(d.name, d.version) for d in snapshot.models["chat"].deployments]
        assert len(ids) == len(set(ids))  # the held deployment replaces its live twin
        assert registry._recovered_at is not None
        registry._recovered_at -= 10  # the grace is over
        await registry._rebuild()
        assert routable_versions() == {"1"}
    finally:
        await registry.stop()
