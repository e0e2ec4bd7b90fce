"""Restart pacing and start-up diagnostics (no processes: the pieces they use)."""

from __future__ import annotations

import json
from pathlib import Path

from extproc.ops.procs import log_cause
from extproc.ops.supervisor import Backoff


def test_backoff_restarts_at_once_then_slows_down_and_resets_after_a_healthy_run() -> None:
    b = Backoff(cap=10.0, healthy_s=30.0)
    delays = [b.after(1.0) for _ in range(8)]
    assert delays[0] == 0.0  # the first restart is immediate
    assert delays == sorted(delays) and delays[-1] == 10.0  # then doubling, capped
    assert b.after(31.0) == 0.0  # a run longer than healthy_s starts over


def test_log_cause_finds_the_error_in_envoy_and_router_logs(tmp_path: Path) -> None:
    envoy = tmp_path / "envoy.log"
    envoy.write_text(
        "[2026-01-01 00:00:00.000][1][info][main] starting\n"
        "[2026-01-01 00:00:00.001][1][critical][main] error initializing config: cannot bind "
        "'127.0.0.1:10000': Address already in use\n"
        "[2026-01-01 00:00:00.002][1][info][main] exiting\n"
    )
    assert "Address already in use" in str(log_cause(envoy))
    router = tmp_path / "router.log"
    router.write_text(
        json.dumps({"level": "info", "msg": "worker started"}) + "\n"
        + json.dumps({"level": "error", "msg": "cannot listen on 127.0.0.1:1: address in use"})
        + "\n"
    )  # fmt: skip
    assert log_cause(router) == "cannot listen on 127.0.0.1:1: address in use"
    # Envoy's JSON access log lines (keys "error", "fail_open") are requests, not errors.
    access = json.dumps({"request_id": "r", "code": 200, "error": None, "details": "via_upstream"})
    envoy.write_text(envoy.read_text() + access + "\n")
    assert "Address already in use" in str(log_cause(envoy))
    quiet = tmp_path / "quiet.log"
    quiet.write_text("all good\n" + access + "\n")
    assert log_cause(quiet) is None
    assert log_cause(tmp_path / "missing.log") is None
