"""Compiled rule conditions and the per-request evaluation context.

See :mod:`extproc.core.rules.ruleset` for how rules combine them.

Conditions are built by :mod:`extproc.control.compile.rules`; ``test`` never raises,
whatever the body holds, and ``peek`` is the three-valued test on the head
alone (``None``: the body would decide).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import isnan
from typing import Any

from extproc.core.protocols import openai
from extproc.core.request import PROTOCOLS, InferenceRequest
from extproc.core.specs.check import prompt_chars

ANY_BODY = frozenset(PROTOCOLS)
OPENAI = frozenset({"openai"})
KSERVE = frozenset({"kserve_v2"})
NONE: frozenset[str] = frozenset()
NUM_OPS: Mapping[str, tuple[Callable[[Any, Any], bool], str]] = {
    "gt": (operator.gt, ">"),
    "gte": (operator.ge, ">="),
    "lt": (operator.lt, "<"),
    "lte": (operator.le, "<="),
    "eq": (operator.eq, "=="),
}
MISSING: Any = object()


class Ctx:
    """One request being evaluated; body-derived values are computed once, on demand."""

    __slots__ = ("_chars", "_last", "body", "protocol", "request")

    def __init__(self, request: InferenceRequest) -> None:
        self.request = request
        self.body = request.body
        self.protocol = request.protocol
        self._chars: int | None = -1
        self._last: str | None = MISSING

    def messages(self) -> int | None:
        if self.protocol != "openai" or self.body is None:
            return None
        msgs = self.body.get("messages")
        return len(msgs) if isinstance(msgs, list) else None

    def prompt_chars(self) -> int | None:
        if self._chars == -1:
            body, path = self.body, self.request.head.path_only
            ok = self.protocol == "openai"
            self._chars = prompt_chars(body, path) if ok and body is not None else None
        return self._chars

    def max_tokens(self) -> int | float | None:
        if self.protocol != "openai" or self.body is None:
            return None
        best = None
        for name in openai.TOKEN_LIMIT_FIELDS:
            v = self.body.get(name)
            if is_num(v) and (best is None or v > best):
                best = v
        return best

    def batch_size(self) -> int | None:
        if self.protocol != "kserve_v2" or self.body is None:
            return None
        inputs = self.body.get("inputs")
        first = inputs[0] if isinstance(inputs, list) and inputs else None
        shape = first.get("shape") if isinstance(first, dict) else None
        dim = shape[0] if isinstance(shape, list) and shape else None
        return dim if type(dim) is int else None

    def last_user(self) -> str | None:
        if self._last is MISSING:
            self._last = None
            msgs = self.body.get("messages") if self.body is not None else None
            if self.protocol == "openai" and isinstance(msgs, list):
                for msg in reversed(msgs):
                    if isinstance(msg, dict) and msg.get("role") == "user":
                        self._last = _text(msg.get("content"))
                        break
        return self._last


def _text(content: object) -> str | None:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts = [
        p["text"]
        for p in content
        if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
    ]
    return "\n".join(parts)


def is_num(v: object) -> bool:
    """A JSON number (not a boolean, not NaN)."""
    t = type(v)
    return t is int or (t is float and not isnan(v))  # type: ignore[arg-type]


class Cond:
    """A compiled condition. ``body`` is the protocols whose bodies it reads."""

    __slots__ = ()
    body: frozenset[str] = NONE
    cost = 0

    def test(self, ctx: Ctx) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def explain(self, ctx: Ctx) -> str:
        return self.describe()

    def peek(self, ctx: Ctx) -> bool | None:
        """Three-valued test without the body: ``None`` when the body would decide."""
        return None if ctx.protocol in self.body else self.test(ctx)


@dataclass(frozen=True, slots=True)
class Str:
    """A string test: one of some exact values, or a regex search."""

    exact: frozenset[str]
    regex: re.Pattern[str] | None = None

    def __call__(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.regex is not None:
            return self.regex.search(value) is not None
        return value in self.exact

    def __str__(self) -> str:
        if self.regex is not None:
            return f"matches /{self.regex.pattern}/"
        if len(self.exact) == 1:
            return f"is {next(iter(self.exact))}"
        return "in [" + ", ".join(sorted(self.exact)) + "]"


class Head(Cond):
    __slots__ = ("get", "label", "match")

    def __init__(self, label: str, get: Callable[[Ctx], str | None], match: Str) -> None:
        self.label, self.get, self.match = label, get, match

    def test(self, ctx: Ctx) -> bool:
        value = self.get(ctx)
        if value is None:
            return False
        m = self.match
        return value in m.exact if m.regex is None else m.regex.search(value) is not None

    def describe(self) -> str:
        return f"{self.label} {self.match}"


class ProtocolIs(Cond):
    __slots__ = ("names",)

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def test(self, ctx: Ctx) -> bool:
        return ctx.protocol in self.names

    def describe(self) -> str:
        return "protocol " + Str(self.names).__str__()


class Has(Cond):
    __slots__ = ("keys",)
    body = ANY_BODY
    cost = 1

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys

    def test(self, ctx: Ctx) -> bool:
        b = ctx.body
        if b is None:
            return False
        for k in self.keys:  # noqa: SIM110 (a loop: no generator per call)
            if b.get(k) is None:
                return False
        return True

    def describe(self) -> str:
        return "has " + ", ".join(self.keys)


class Num(Cond):
    __slots__ = ("body", "cost", "get", "label", "ops")

    def __init__(
        self,
        label: str,
        get: Callable[[Ctx], float | None],
        ops: tuple[tuple[Callable[[Any, Any], bool], str, float], ...],
        body: frozenset[str],
    ) -> None:
        self.label, self.get, self.ops, self.body = label, get, ops, body
        self.cost = 3 if label == "prompt_chars" else 2  # it walks every message

    def test(self, ctx: Ctx) -> bool:
        return compare(self.get(ctx), self.ops)

    def describe(self) -> str:
        return f"{self.label} " + ", ".join(f"{sym} {bound}" for _, sym, bound in self.ops)

    def explain(self, ctx: Ctx) -> str:
        return f"{self.label} {self.get(ctx)} " + ", ".join(f"{s} {b}" for _, s, b in self.ops)


def compare(value: object, ops: tuple[tuple[Callable[[Any, Any], bool], str, float], ...]) -> bool:
    if not is_num(value):
        return False
    for fn, _, bound in ops:  # noqa: SIM110 (a loop: no generator per call)
        if not fn(value, bound):
            return False
    return True


class Field(Cond):
    """``body_field``: the value at a JSON Pointer equals / matches / exists / compares."""

    __slots__ = ("equals", "exists", "ops", "pointer", "regex", "tokens")
    body = ANY_BODY
    cost = 1

    def __init__(self, pointer: str, tokens: tuple[tuple[str, int | None], ...]) -> None:
        self.pointer, self.tokens = pointer, tokens
        self.equals: Any = MISSING
        self.exists: bool | None = None
        self.regex: re.Pattern[str] | None = None
        self.ops: tuple[tuple[Callable[[Any, Any], bool], str, float], ...] = ()

    def resolve(self, ctx: Ctx) -> Any:
        node: Any = ctx.body
        if node is None:
            return MISSING
        for key, index in self.tokens:
            if isinstance(node, Mapping):
                node = node.get(key, MISSING)
            elif isinstance(node, list) and index is not None and index < len(node):
                node = node[index]
            else:
                return MISSING
            if node is MISSING:
                return MISSING
        return node

    def test(self, ctx: Ctx) -> bool:
        v = self.resolve(ctx)
        if self.exists is not None:
            return (v is not MISSING and v is not None) is self.exists
        if self.regex is not None:
            return isinstance(v, str) and self.regex.search(v) is not None
        if self.ops:
            return compare(v, self.ops)
        e = self.equals
        return v is not MISSING and (type(v) is bool) is (type(e) is bool) and v == e

    def describe(self) -> str:
        if self.exists is not None:
            return f"body_field {self.pointer} " + ("exists" if self.exists else "is absent")
        if self.regex is not None:
            return f"body_field {self.pointer} matches /{self.regex.pattern}/"
        if self.ops:
            return f"body_field {self.pointer} " + ", ".join(f"{s} {b}" for _, s, b in self.ops)
        return f"body_field {self.pointer} == {self.equals!r}"


class Text(Cond):
    """``last_user_message``: regex search, substring, or any of some keywords (ignoring
    case) in the last user message's text. ``keywords`` is the cheap way to spot words:
    one ``str.lower()`` and substring tests, where a case-insensitive regex costs ~25 ns
    per character (about 100 us on a 4 KiB prompt)."""

    __slots__ = ("contains", "keywords", "regex")
    body = OPENAI
    cost = 4

    def __init__(
        self,
        regex: re.Pattern[str] | None,
        contains: str | None,
        keywords: tuple[str, ...] = (),
    ) -> None:
        self.regex, self.contains, self.keywords = regex, contains, keywords

    def test(self, ctx: Ctx) -> bool:
        text = ctx.last_user()
        if text is None:
            return False
        if self.regex is not None:
            return self.regex.search(text) is not None
        if self.keywords:
            low = text.lower()
            for word in self.keywords:  # noqa: SIM110 (plain loop is faster than any())
                if word in low:
                    return True
            return False
        return self.contains is not None and self.contains in text

    def describe(self) -> str:
        if self.regex is not None:
            return f"last_user_message matches /{self.regex.pattern}/"
        if self.keywords:
            return f"last_user_message has one of {list(self.keywords)}"
        return f"last_user_message contains {self.contains!r}"


class All(Cond):
    __slots__ = ("body", "conds", "cost")

    def __init__(self, conds: list[Cond]) -> None:
        self.conds = tuple(sorted(conds, key=lambda c: c.cost))  # cheap tests first
        self.body = frozenset().union(*(c.body for c in conds))
        self.cost = max(c.cost for c in conds)

    def test(self, ctx: Ctx) -> bool:
        for c in self.conds:  # noqa: SIM110 (a loop: no generator per call)
            if not c.test(ctx):
                return False
        return True

    def peek(self, ctx: Ctx) -> bool | None:
        out: bool | None = True
        for c in self.conds:
            v = c.peek(ctx)
            if v is False:
                return False
            if v is None:
                out = None
        return out

    def describe(self) -> str:
        return ", ".join(c.describe() for c in self.conds)

    def explain(self, ctx: Ctx, sep: str = ", ") -> str:
        return sep.join(c.explain(ctx) for c in self.conds)


class AnyOf(Cond):
    __slots__ = ("body", "branches", "cost")

    def __init__(self, branches: list[All]) -> None:
        flat = (b.conds[0] if len(b.conds) == 1 else b for b in branches)
        self.branches: tuple[Cond, ...] = tuple(sorted(flat, key=lambda c: c.cost))
        self.body = frozenset().union(*(c.body for c in branches))
        self.cost = max(c.cost for c in branches)

    def test(self, ctx: Ctx) -> bool:
        for b in self.branches:  # noqa: SIM110 (a loop: no generator per call)
            if b.test(ctx):
                return True
        return False

    def peek(self, ctx: Ctx) -> bool | None:
        out: bool | None = False
        for b in self.branches:
            v = b.peek(ctx)
            if v is True:
                return True
            if v is None:
                out = None
        return out

    def describe(self) -> str:
        return "any: (" + ") or (".join(b.describe() for b in self.branches) + ")"

    def explain(self, ctx: Ctx) -> str:
        for b in self.branches:
            if b.test(ctx) if ctx.body is not None else b.peek(ctx):
                return "any: " + b.explain(ctx)
        return self.describe()


class Not(Cond):
    __slots__ = ("body", "cost", "inner")

    def __init__(self, inner: All) -> None:
        self.inner, self.body, self.cost = inner, inner.body, inner.cost

    def test(self, ctx: Ctx) -> bool:
        return not self.inner.test(ctx)

    def peek(self, ctx: Ctx) -> bool | None:
        v = self.inner.peek(ctx)
        return None if v is None else not v

    def describe(self) -> str:
        return f"not ({self.inner.describe()})"
