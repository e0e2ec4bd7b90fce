"""The steering team's request corpus (../shared/samples), shared by unit and integration tests."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

SAMPLES = Path(os.environ.get("MODEL_ROUTER_SAMPLES", ROOT.parent / "shared" / "samples"))


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    expect: dict[str, Any]
    needs_spec: str | None

    @property
    def routable(self) -> bool:
        return bool(self.expect["outcome"] == "route")


def _require() -> None:
    if not (SAMPLES / "manifest.jsonl").exists():
        msg = f"sample corpus not found at {SAMPLES} (set MODEL_ROUTER_SAMPLES)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def load_cases() -> list[Case]:
    if not (SAMPLES / "manifest.jsonl").exists():
        return []
    cases = []
    for line in (SAMPLES / "manifest.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        c = json.loads(line)
        cases.append(
            Case(
                id=c["id"],
                method=c["method"],
                path=c["path"],
                headers=dict(c["headers"]),
                body=(SAMPLES / c["body_file"]).read_bytes(),
                expect=c["expect"],
                needs_spec=c.get("needs_spec"),
            )
        )
    return cases


def specs() -> Mapping[str, Any]:
    _require()
    return dict(json.loads((SAMPLES / "specs.json").read_text()))


def corpus_routes(addresses: Mapping[str, str], *, extra: str = "") -> str:
    """A routing file (YAML text) with every corpus model, one deployment per version.

    ``addresses`` maps ``"<model>@<version>"`` to ``ip:port``; missing ones get a
    placeholder loopback address (fine where nothing connects).
    """
    lines = [
        "limits: {max_body_bytes: 1048576}",
        f"spec_files: [{json.dumps(str(SAMPLES / 'specs.json'))}]",
        "models:",
    ]
    deps = ["deployments:"]
    port = 19000
    for name, spec in specs().items():
        versions = ", ".join(json.dumps(v) for v in spec["versions"])
        lines.append(
            f"  {json.dumps(name)}: {{protocol: {spec['protocol']}, versions: [{versions}]}}"
        )
        for v in spec["versions"]:
            port += 1
            addr = addresses.get(f"{name}@{v}", f"127.0.0.1:{port}")
            deps.append(
                f"  - {{name: {json.dumps(f'{name}-v{v}')}, model: {json.dumps(name)}, "
                f"version: {json.dumps(v)}, endpoints: [{json.dumps(addr)}]}}"
            )
    return "\n".join([*lines, *deps, extra]) + "\n"


def require_corpus() -> list[Case]:
    _require()
    return load_cases()
