"""``model-router explain`` (``extproc.ops.explain``) through the command line: the JSON
decision for a routed request, a headers-only one and a rejected one."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from extproc.cli import main
from tests.support import ROOT

ROUTES = str(ROOT / "examples" / "routes.yaml")


def test_explain_routes_and_rejects(tmp_path: Path) -> None:
    req = tmp_path / "req.json"
    req.write_text(
        json.dumps({"model": "chat-large", "messages": [{"role": "user", "content": "hi"}]})
    )
    r = CliRunner().invoke(main, ["explain", "--config", ROUTES, "--request", str(req)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["outcome"] == "route"
    assert out["request"] == {
        "protocol": "openai", "model": "chat-large", "version": None, "capabilities": None,
        "identified_by": "body 'model'", "body_inspected": True,
    }  # fmt: skip
    assert out["decision"]["deployment"] == "chat-large-a100"
    assert out["decision"]["endpoint"] in ("127.0.0.1:8011", "127.0.0.1:8012")
    assert out["decision"]["picker"] == "weighted_random"
    r = CliRunner().invoke(
        main,
        ["explain", "--config", ROUTES, "--path", "/v2/models/resnet50/infer",
         "--header", "x-model-version=2"],
    )  # fmt: skip
    out = json.loads(r.output)
    assert out["decision"]["deployment"] == "resnet50-triton-v2"
    assert out["steps"] == ["request_headers: routed on headers; body not requested"]
    r = CliRunner().invoke(
        main, ["explain", "--config", ROUTES, "--path", "/x", "--header", "x-model=nope"]
    )
    out = json.loads(r.output)
    assert out["outcome"] == "reject" and out["status"] == 404
    r = CliRunner().invoke(main, ["explain", "--config", ROUTES, "--header", "novalue"])
    assert r.exit_code == 2 and "is not k=v" in r.output
