"""The soak harness, shortened for CI: 60 s of the mixed workload (``loadtest/soak.py``;
the README's figure is the 10-minute run). It passes only with no unexpected answer,
router RSS growth under 10% after the warm-up, and flat open files and in-flight streams."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, finish

pytestmark = pytest.mark.integration


async def test_soak_60s(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.soak", "--duration", "60", "--json", str(out),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    text = (await finish(proc, 300)).decode()
    assert proc.returncode == 0, text
    result = json.loads(out.read_text())
    assert result["ok"] and result["unexpected"] == 0, result["failures"]
    assert result["requests"] >= 1000  # 60 s at 40 req/s, counted, not timed
    router = result["router"]
    assert router["rss_growth_pct"] < 10
    assert router["inflight_end"] == 0
