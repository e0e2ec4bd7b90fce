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


def test_check_config_shows_every_problem_in_line_order(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "listener: {port: 50051, workres: 2}\n"
        "models:\n"
        "  chat: {protocol: openai, versions: ['1'], spec: {openai: {max_tokenz: 5}}}\n"
        "  img: {protocol: kserve_v2, versions: ['1']}\n"
        "deployments:\n"
        "  - {name: a, model: chta, version: '1', endpoints: ['127.0.0.1:1']}\n"
        "  - {name: b, model: img, version: '7', endpoints: ['127.0.0.1:2']}\n"
        "rules:\n"
        "  - {name: r, when: {colour: red}, route: {model: chat}}\n"
    )
    r = CliRunner().invoke(main, ["check-config", str(bad)])
    assert r.exit_code == 1
    lines = [ln.strip() for ln in r.output.splitlines()[1:]]
    assert [ln.split(":")[0] for ln in lines] == [
        "line 1", "line 3", "line 6", "line 7", "line 9",
    ]  # fmt: skip
    assert "Traceback" not in r.output


def test_new_key_prints_the_key_once_and_only_its_digest_for_the_file() -> None:
    import hashlib

    import yaml

    r = CliRunner().invoke(main, ["new-key", "--name", "ci", "--tenant", "acme"])
    assert r.exit_code == 0, r.output
    key = r.stderr.rsplit(": ", 1)[1].strip()
    assert key.startswith("mr-") and len(key) > 40
    [entry] = yaml.safe_load(r.stdout)
    assert entry == {"name": "ci", "sha256": hashlib.sha256(key.encode()).hexdigest(),
                     "tenant": "acme"}  # fmt: skip
    assert key not in r.stdout


def test_healthcheck_of_a_worker_that_does_not_answer_fails_with_the_reason() -> None:
    from extproc.ops.procs import PORTS

    (port,) = PORTS.take(1)
    r = CliRunner().invoke(
        main, ["healthcheck", "--address", f"127.0.0.1:{port}", "--timeout", "0.5"]
    )
    assert r.exit_code == 1
    assert f"model-router at 127.0.0.1:{port}: readiness is not SERVING: unreachable (" in r.output


def test_stack_needs_a_checkout_with_the_compose_file(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["stack", "--root", str(tmp_path)])
    assert r.exit_code == 1
    assert f"model-router stack: no docker-compose.yml in {tmp_path}" in r.output
