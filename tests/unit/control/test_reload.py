"""The reloader: states for every snapshot and reload, refused reloads, no sockets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from extproc.control import reload as reload_module
from extproc.control.compile import CompiledRouting
from extproc.control.loading import parse_config
from extproc.control.reload import Reloader, load_routing, startup_only_changes
from extproc.core.flow import RouterState
from extproc.core.snapshot import Snapshot

ROUTES = """
models: {m: {protocol: openai, versions: ['1']}}
deployments: [{name: d, model: m, version: '1', endpoints: ['127.0.0.1:9']}]
"""


def _reloader(tmp_path: Path, text: str = ROUTES) -> tuple[Reloader, list[RouterState], list[str]]:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    states: list[RouterState] = []
    results: list[str] = []
    reloader = Reloader(
        load_routing(path), path=path, on_state=lambda s, _: states.append(s), on_reload=results.append,
        watch_interval_s=3600,
    )  # fmt: skip
    return reloader, states, results


async def test_first_state_has_no_snapshot_then_the_registry_publishes(tmp_path: Path) -> None:
    reloader, states, _ = _reloader(tmp_path)
    first = reloader.prepare()
    assert first.snapshot is None
    await reloader.start()
    try:
        assert states and states[-1].snapshot is not None
        assert "m" in states[-1].snapshot.models
    finally:
        await reloader.stop()


async def test_a_snapshot_from_a_registry_not_in_use_is_ignored(tmp_path: Path) -> None:
    reloader, states, _ = _reloader(tmp_path)
    await reloader.start()
    try:
        before = len(states)
        other = reloader._new_registry(reloader.compiled, 7)  # e.g. one a reload is building
        other._publish(Snapshot(models={}, source="other", generation=7))
        assert len(states) == before
    finally:
        await reloader.stop()


async def test_reload_counts_once_and_swaps_the_state(tmp_path: Path) -> None:
    reloader, states, results = _reloader(tmp_path)
    await reloader.start()
    try:
        (tmp_path / "routes.yaml").write_text(ROUTES.replace("127.0.0.1:9", "127.0.0.1:10"))
        assert await reloader.reload()
        assert results == ["success"]
        snap = states[-1].snapshot
        assert snap is not None and snap.models["m"].deployments[0].endpoints[0].address == (
            "127.0.0.1:10"
        )
        # The watcher sees the stamp the reload recorded: it does not load the file again.
        assert reloader._stamp is not None
    finally:
        await reloader.stop()


async def test_an_edit_made_while_a_reload_reads_the_file_is_loaded_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reload (SIGHUP) reads the file; the user saves another edit before it finishes.
    # The watcher's next look must load that edit, not take it as the one just loaded.
    reloader, states, results = _reloader(tmp_path)
    path = tmp_path / "routes.yaml"
    real = reload_module.load_routing

    def load_then_edit(at: Path) -> CompiledRouting:
        compiled = real(at)
        path.write_text("models: [this is not valid")
        return compiled

    await reloader.start()
    try:
        path.write_text(ROUTES.replace("127.0.0.1:9", "127.0.0.1:10"))
        monkeypatch.setattr(reload_module, "load_routing", load_then_edit)
        assert await reloader.reload()
        monkeypatch.setattr(reload_module, "load_routing", real)
        assert not await reloader.reload(only_if_changed=True)  # read, and refused
        assert results == ["success", "error"]
        # Seen once: the refused edit is not read again until the file changes.
        assert not await reloader.reload(only_if_changed=True)
        assert results == ["success", "error"]
        snap = states[-1].snapshot
        assert snap is not None
        assert snap.models["m"].deployments[0].endpoints[0].address == "127.0.0.1:10"
    finally:
        await reloader.stop()


async def test_an_edit_saved_between_the_first_load_and_start_is_loaded(tmp_path: Path) -> None:
    reloader, _, results = _reloader(tmp_path)  # loaded here
    (tmp_path / "routes.yaml").write_text(ROUTES.replace("127.0.0.1:9", "127.0.0.1:10"))
    await reloader.start()
    try:
        assert await reloader.reload(only_if_changed=True)  # what the watcher does
        assert results == ["success"]
        assert not await reloader.reload(only_if_changed=True)
    finally:
        await reloader.stop()


async def test_a_worker_started_on_the_last_good_file_does_not_refuse_the_broken_one_again(
    tmp_path: Path,
) -> None:
    reloader, _, results = _reloader(tmp_path)
    reloader.compiled = replace(reloader.compiled, last_good=True)  # as load_last_good gives
    (tmp_path / "routes.yaml").write_text("models: [this is not valid")  # refused at start-up
    await reloader.start()
    try:
        assert not await reloader.reload(only_if_changed=True)  # what the watcher does
        assert results == []
    finally:
        await reloader.stop()


async def test_a_startup_only_change_is_refused_naming_the_setting(tmp_path: Path) -> None:
    reloader, states, results = _reloader(tmp_path)
    await reloader.start()
    try:
        current = states[-1]
        (tmp_path / "routes.yaml").write_text("listener: {port: 6000}\n" + ROUTES)
        assert not await reloader.reload()
        assert results == ["error"]
        assert states[-1] is current
    finally:
        await reloader.stop()


def test_startup_only_changes_name_each_setting() -> None:
    old = parse_config(ROUTES)
    new = parse_config("listener: {workers: 2}\nlimits: {max_body_bytes: 2048}\n" + ROUTES)
    found = startup_only_changes(old, new)
    assert [f.split(":")[0] for f in found] == ["listener.workers", "limits.max_body_bytes"]
    assert all("restart" in f for f in found)
    assert startup_only_changes(old, parse_config(ROUTES + "tenant_header: x-team\n")) == []
