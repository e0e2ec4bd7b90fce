"""Reading the few gauges the scorers need out of a Prometheus text exposition, fast.

Only lines of the wanted families are parsed (a vLLM ``/metrics`` page has hundreds of
others); values of one family are summed over its label sets (a server that serves
several models reports one series per model).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def sample_name(line: str) -> str:
    end = len(line)
    for stop in ("{", " "):
        i = line.find(stop)
        if i != -1 and i < end:
            end = i
    return line[:end]


def sample_value(line: str) -> float | None:
    """The value of a sample line (``name{labels} value [timestamp]``)."""
    close = line.rfind("}")
    rest = line[close + 1 :] if close != -1 else line.split(" ", 1)[1] if " " in line else ""
    parts = rest.split()
    if not parts:
        return None
    try:
        value = float(parts[0])
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def labels(line: str) -> dict[str, str]:
    start, close = line.find("{"), line.rfind("}")
    if start == -1 or close == -1:
        return {}
    return {k: v for k, v in _LABEL.findall(line[start + 1 : close])}


def scan(text: str, families: Iterable[str]) -> dict[str, list[str]]:
    """The sample lines of each wanted family (comment lines skipped)."""
    wanted = set(families)
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name = sample_name(line)
        if name in wanted:
            out.setdefault(name, []).append(line)
    return out


def total(lines: list[str] | None) -> float | None:
    """The sum of the samples' values (``None`` when there are none)."""
    if not lines:
        return None
    values = [v for v in map(sample_value, lines) if v is not None]
    return sum(values) if values else None
