"""The command line (``extproc.cli``): ``check-config``."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from extproc.cli import main
from tests.support import ROOT

ROUTES = str(ROOT / "examples" / "routes.yaml")


def test_check_config_ok_and_errors(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["check-config", ROUTES])
    assert r.exit_code == 0 and "ok (5 models, 7 deployments, 8 endpoints)" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m:\n    protocol: openai\n    versions: ['1']\n    colour: red\n")
    r = CliRunner().invoke(main, ["check-config", str(bad)])
    assert r.exit_code == 1
    assert f"{bad}: invalid routing file" in r.output
    assert "line 5: models.m.colour: unknown key" in r.output
