from __future__ import annotations

import subprocess

import pytest

from extproc.ops.procs import envoy_binary
from tests.support import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", ["envoy.yaml", "envoy.fail-open.yaml"])
def test_shipped_config_validates_with_real_envoy(name: str) -> None:
    proc = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(ROOT / "envoy" / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"configuration '{ROOT / 'envoy' / name}' OK" in proc.stdout + proc.stderr
    assert "deprecated" not in (proc.stdout + proc.stderr).lower()
