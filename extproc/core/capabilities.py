"""Capability requirements: what a request needs from a deployment's metadata.

A request asks with ``x-model-capabilities: domain=medical,max_context>=8192``
(and content rules may add more). A deployment's capabilities are its ``tags`` in
the routing file or its Consul ``ServiceMeta``. ``=`` and ``!=`` compare strings;
``>=``, ``<=``, ``>``, ``<`` compare numbers (a deployment without a numeric value
for the key does not satisfy them).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from extproc.core.errors import InvalidRequest, shown

_ITEM = re.compile(r"^\s*([A-Za-z0-9_.-]{1,63})\s*(>=|<=|!=|=|>|<)\s*(.*?)\s*$")
_NUMERIC: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"

    def satisfied_by(self, tags: Mapping[str, str]) -> bool:
        have = tags.get(self.key)
        if self.op == "=":
            return have == self.value
        if self.op == "!=":
            return have != self.value
        if have is None:
            return False
        try:
            return _NUMERIC[self.op](float(have), float(self.value))
        except ValueError:
            return False


Requirements = tuple[Requirement, ...]


def parse(raw: str, *, source: str = "x-model-capabilities") -> Requirements:
    """``k=v,k2>=3`` into requirements; a malformed item is a 400 naming it."""
    out = []
    for item in raw.split(","):
        if not item.strip():
            continue
        m = _ITEM.match(item)
        if m is None:
            raise InvalidRequest(
                f"{source} item {shown(item.strip())} is not key=value (or key>=number, ...)",
                header=source or None,
            )
        key, op, value = m.groups()
        if op in _NUMERIC:
            try:
                float(value)
            except ValueError:
                raise InvalidRequest(
                    f"{source} item {shown(item.strip())}: {op} needs a number",
                    header=source or None,
                ) from None
        out.append(Requirement(key, op, value))
    return tuple(out)


def satisfied(reqs: Requirements, tags: Mapping[str, str]) -> bool:
    return all(r.satisfied_by(tags) for r in reqs)


def describe(reqs: Requirements) -> str:
    return ",".join(str(r) for r in reqs)
