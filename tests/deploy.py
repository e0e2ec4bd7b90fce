"""The compose stack's files (``docker-compose.yml``, ``deploy/``) and the real programs
that check them: docker compose (``scripts/install-compose``), promtool."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "model-router.json"
RULES = DEPLOY / "prometheus" / "rules" / "model-router.yml"

# PromQL words that are not metric names: functions (followed by "("), operators, modifiers.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_KEYWORDS |= {"and", "or", "unless", "offset", "inf", "nan"}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTORS = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_NAME = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(\s*\()?")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (Grafana's ``$__...`` variables allowed).

    Strings, label matchers, ranges and grouping lists are cut first; what remains is
    names, function calls, operators and numbers."""
    text = _STRINGS.sub('""', expr)
    text = _GROUPING.sub(" ", text)
    text = _SELECTORS.sub(" ", text)
    names = set()
    for match in _NAME.finditer(text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def dashboard_queries(path: Path = DASHBOARD) -> dict[str, list[str]]:
    """Panel title -> its PromQL expressions."""
    dashboard = json.loads(path.read_text())
    return {
        panel["title"]: [t["expr"] for t in panel.get("targets", [])]
        for panel in dashboard["panels"]
        if panel.get("type") != "row"
    }


def rule_expressions(path: Path = RULES) -> dict[str, str]:
    """Alert name -> its expression."""
    import yaml

    groups = yaml.safe_load(path.read_text())["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"] if "alert" in r}


def compose_binary() -> Path:
    """Docker Compose v2 (``$COMPOSE_BIN`` or ``scripts/install-compose``'s cache)."""
    env = os.environ.get("COMPOSE_BIN")
    if env and os.access(env, os.X_OK):
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "model-router"
    found = sorted(cache.glob("docker-compose-*"))
    found = [p for p in found if os.access(p, os.X_OK) and ".tmp." not in p.name]
    if not found:
        pytest.skip("no docker compose: run scripts/install-compose (or set COMPOSE_BIN)")
    return found[-1]


def tool(name: str) -> Path:
    """``promtool`` or ``prometheus`` (Debian's ``prometheus`` package)."""
    env = os.environ.get(f"{name.upper()}_BIN")
    path = env if env and os.access(env, os.X_OK) else shutil.which(name)
    if not path:
        pytest.skip(f"no {name}: apt-get install -y prometheus (or set {name.upper()}_BIN)")
    return Path(path)


def run(argv: list[str | Path], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def compose_config() -> dict[str, Any]:
    """``docker compose config`` of the repository's compose file, resolved, as JSON."""
    proc = run([compose_binary(), "-f", ROOT / "docker-compose.yml", "config", "--format", "json"])
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data
