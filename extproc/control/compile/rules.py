"""Validation and compilation of the routing file's ``rules:`` into a
:class:`~extproc.core.rules.ruleset.RuleSet`.

Every problem is collected with its path (``rules[2].when.messages: ...``) and
reported at once as a :class:`~extproc.control.errors.RulesError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from extproc.control.errors import RulesError
from extproc.core import capabilities
from extproc.core.errors import InvalidRequest
from extproc.core.request import PROTOCOLS
from extproc.core.rules.conditions import (
    KSERVE,
    NUM_OPS,
    OPENAI,
    All,
    AnyOf,
    Cond,
    Ctx,
    Field,
    Has,
    Head,
    Not,
    Num,
    ProtocolIs,
    Str,
    Text,
)
from extproc.core.rules.ruleset import CompiledRule, RuleAction, RuleSet

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
_NUM_MSG = "must be a mapping of gt/gte/lt/lte/eq to numbers"

_RULE_KEYS = ("name", "description", "when", "route")
_ROUTE_KEYS = ("model", "version", "capabilities")
_NUMBERS: Mapping[str, tuple[Callable[[Ctx], float | None], frozenset[str]]] = {
    "messages": (Ctx.messages, OPENAI),
    "prompt_chars": (Ctx.prompt_chars, OPENAI),
    "max_tokens": (Ctx.max_tokens, OPENAI),
    "batch_size": (Ctx.batch_size, KSERVE),
}
_BAD_ESCAPE = re.compile(r"~(?![01])")
_INDEX = re.compile(r"^(?:0|[1-9][0-9]{0,9})$")
_STR_MSG = "must be a string, a list of strings or {regex: ...}"


def compile_rules(
    raw: object, *, tenant_header: str = "x-tenant-id", where: str = "rules"
) -> RuleSet:
    """Compile the YAML ``rules:`` list (``None``: no rules); :class:`RulesError` lists
    every problem."""
    header = tenant_header.strip().lower()
    return RuleSet(_parse_rules(raw, header, where), header)


def _parse_rules(raw: object, tenant_header: str, where: str) -> tuple[CompiledRule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RulesError([f"{where}: must be a list of rules"])
    parser = _Parser(tenant_header)
    seen: set[str] = set()
    rules = [parser.rule(item, f"{where}[{i}]", seen) for i, item in enumerate(raw)]
    if parser.problems:
        raise RulesError(parser.problems)
    return tuple(r for r in rules if r is not None)


def _path(ctx: Ctx) -> str:
    return ctx.request.head.path_only


def _model(ctx: Ctx) -> str:
    return ctx.request.model


def _header(name: str) -> Callable[[Ctx], str | None]:
    def get(ctx: Ctx) -> str | None:
        return ctx.request.head.headers.get(name)

    return get


class _Parser:
    def __init__(self, tenant_header: str) -> None:
        self.tenant_header = tenant_header
        self.problems: list[str] = []

    def bad(self, at: str, what: str) -> None:
        self.problems.append(f"{at}: {what}")

    # ----------------------------------------------------------------- rule and action

    def rule(self, raw: object, at: str, seen: set[str]) -> CompiledRule | None:
        if not isinstance(raw, Mapping):
            self.bad(at, "must be a mapping with name, when and route")
            return None
        before = len(self.problems)
        for key in raw:
            if key not in _RULE_KEYS:
                self.bad(f"{at}.{key}", "unknown key; a rule has " + ", ".join(_RULE_KEYS))
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            self.bad(
                f"{at}.name",
                "required: 1-100 letters, digits, '_', '.', ':' or '-' (first a letter or digit)",
            )
        elif name in seen:
            self.bad(f"{at}.name", f"duplicate rule name {name!r}")
        else:
            seen.add(name)
        if not isinstance(raw.get("description", ""), str):
            self.bad(f"{at}.description", "must be a string")
        when = self.conditions(raw.get("when"), f"{at}.when")
        action = self.action(raw.get("route"), f"{at}.route")
        if when is None or action is None or len(self.problems) > before:
            return None
        assert isinstance(name, str)
        return CompiledRule(name, when, action)

    def action(self, raw: object, at: str) -> RuleAction | None:
        if not isinstance(raw, Mapping) or not raw:
            self.bad(at, "required: a mapping with model, version and/or capabilities")
            return None
        ok = True
        for key in raw:
            if key not in _ROUTE_KEYS:
                self.bad(f"{at}.{key}", "unknown action; use model, version or capabilities")
                ok = False
        model = raw.get("model")
        if model is not None and (not isinstance(model, str) or not model.strip()):
            self.bad(f"{at}.model", "must be a non-empty string (a model in models:)")
            ok = False
        version = raw.get("version")
        if type(version) is int:
            version = str(version)
        elif version is not None and (not isinstance(version, str) or not version.strip()):
            self.bad(f"{at}.version", "must be a non-empty string (or an integer)")
            ok = False
        caps = self.capabilities(raw.get("capabilities"), f"{at}.capabilities")
        if caps is None:
            return None
        if ok and not (model or version or caps):
            self.bad(at, "needs at least one of model, version, capabilities")
            ok = False
        return RuleAction(model, version, caps) if ok else None

    def capabilities(self, raw: object, at: str) -> capabilities.Requirements | None:
        if raw is None:
            return ()
        if isinstance(raw, Mapping):
            items = []
            for k, v in raw.items():
                if not isinstance(k, str) or isinstance(v, Mapping | list) or v is None:
                    self.bad(f"{at}.{k}", "must map a capability name to a string or number")
                    return None
                items.append(f"{k}={v}")
            raw = ",".join(items)
        if not isinstance(raw, str):
            self.bad(at, "must be a string (key=value,key2>=3) or a mapping of key to value")
            return None
        try:
            return capabilities.parse(raw, source="")
        except InvalidRequest as exc:
            self.bad(at, exc.message.strip())
            return None

    # ----------------------------------------------------------------- conditions

    def conditions(self, raw: object, at: str) -> All | None:
        if not isinstance(raw, Mapping) or not raw:
            self.bad(at, "required: a non-empty mapping of conditions (" + ", ".join(_CONDS) + ")")
            return None
        out: list[Cond] = []
        ok = True
        for key, value in raw.items():
            parse = _CONDS.get(key) if isinstance(key, str) else None
            cond = None
            if parse is None:
                self.bad(f"{at}.{key}", "unknown condition; use one of " + ", ".join(_CONDS))
            else:
                cond = parse(self, value, f"{at}.{key}")
            if cond is None:
                ok = False
            else:
                out.append(cond)
        return All(out) if ok else None

    def regex(self, raw: object, at: str) -> re.Pattern[str] | None:
        if not isinstance(raw, str):
            self.bad(at, "must be a string (a Python regular expression)")
            return None
        try:
            return re.compile(raw)
        except re.error as exc:
            self.bad(at, f"bad regular expression: {exc}")
            return None

    def strings(self, raw: object, at: str) -> Str | None:
        if isinstance(raw, str) and raw:
            return Str(frozenset({raw}))
        if isinstance(raw, list) and raw and all(isinstance(s, str) and s for s in raw):
            return Str(frozenset(raw))
        if isinstance(raw, Mapping) and list(raw) == ["regex"]:
            pattern = self.regex(raw["regex"], at + ".regex")
            return None if pattern is None else Str(frozenset(), pattern)
        self.bad(at, _STR_MSG)
        return None

    def numbers(self, raw: object, at: str) -> tuple[Any, ...] | None:
        if (
            not isinstance(raw, Mapping)
            or not raw
            or any(k not in NUM_OPS or not _finite(v) for k, v in raw.items())
        ):
            self.bad(at, _NUM_MSG)
            return None
        return tuple((*NUM_OPS[k], v) for k, v in raw.items())

    def c_path(self, raw: object, at: str) -> Cond | None:
        m = self.strings(raw, at)
        return None if m is None else Head("path", _path, m)

    def c_model(self, raw: object, at: str) -> Cond | None:
        m = self.strings(raw, at)
        return None if m is None else Head("model", _model, m)

    def c_tenant(self, raw: object, at: str) -> Cond | None:
        m = self.strings(raw, at)
        return None if m is None else Head("tenant", _header(self.tenant_header), m)

    def c_header(self, raw: object, at: str) -> Cond | None:
        if not isinstance(raw, Mapping) or not raw:
            self.bad(at, "must be a mapping of header name to " + _STR_MSG[8:])
            return None
        out: list[Cond] = []
        for name, value in raw.items():
            if not isinstance(name, str) or not name.strip():
                self.bad(at, "header names must be non-empty strings")
                continue
            m = self.strings(value, f"{at}.{name}")
            key = name.strip().lower()
            if m is not None:
                out.append(Head(f"header {key}", _header(key), m))
        return All(out) if len(out) == len(raw) else None

    def c_protocol(self, raw: object, at: str) -> Cond | None:
        names = [raw] if isinstance(raw, str) else raw
        if not isinstance(names, list) or not names or any(n not in PROTOCOLS for n in names):
            self.bad(at, "must be openai, kserve_v2 or generic (or a list of them)")
            return None
        return ProtocolIs(frozenset(names))

    def c_has(self, raw: object, at: str) -> Cond | None:
        keys = [raw] if isinstance(raw, str) else raw
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            self.bad(at, "must be a list of top-level body field names")
            return None
        return Has(tuple(keys))

    def c_body_field(self, raw: object, at: str) -> Cond | None:
        tests = ("equals", "regex", "exists", *NUM_OPS)
        if not isinstance(raw, Mapping):
            self.bad(at, "must be a mapping: {pointer: /a/b, equals | regex | exists | gt...}")
            return None
        unknown = [k for k in raw if k != "pointer" and k not in tests]
        given = [k for k in raw if k in tests]
        numeric = [k for k in given if k in NUM_OPS]
        if unknown:
            self.bad(f"{at}.{unknown[0]}", "unknown key; use pointer and " + ", ".join(tests))
            return None
        if not given or (len(given) > 1 and len(numeric) != len(given)):
            self.bad(at, "needs exactly one of equals, regex, exists, or numeric comparisons")
            return None
        pointer = raw.get("pointer")
        if not isinstance(pointer, str) or not pointer.startswith("/"):
            self.bad(f"{at}.pointer", "required: a JSON Pointer such as /metadata/domain")
            return None
        if _BAD_ESCAPE.search(pointer):
            self.bad(f"{at}.pointer", "'~' must be followed by 0 or 1 (RFC 6901)")
            return None
        tokens = tuple(
            (t, int(t) if _INDEX.match(t) else None)
            for t in (s.replace("~1", "/").replace("~0", "~") for s in pointer.split("/")[1:])
        )
        cond = Field(pointer, tokens)
        if numeric:
            ops = self.numbers({k: raw[k] for k in numeric}, at)
            if ops is None:
                return None
            cond.ops = ops
        elif "regex" in raw:
            cond.regex = self.regex(raw["regex"], at + ".regex")
            if cond.regex is None:
                return None
        elif "exists" in raw:
            if not isinstance(raw["exists"], bool):
                self.bad(f"{at}.exists", "must be true or false")
                return None
            cond.exists = raw["exists"]
        else:
            equals = raw["equals"]
            if equals is not None and not isinstance(equals, str | int | float | bool):
                self.bad(f"{at}.equals", "must be a string, number, boolean or null")
                return None
            cond.equals = equals
        return cond

    def c_last_user_message(self, raw: object, at: str) -> Cond | None:
        if isinstance(raw, Mapping) and list(raw) == ["regex"]:
            pattern = self.regex(raw["regex"], at + ".regex")
            return None if pattern is None else Text(pattern, None)
        if isinstance(raw, Mapping) and list(raw) == ["contains"]:
            text = raw["contains"]
            if isinstance(text, str) and text:
                return Text(None, text)
            self.bad(at + ".contains", "must be a non-empty string")
            return None
        if isinstance(raw, Mapping) and list(raw) == ["keywords"]:
            words = raw["keywords"]
            if (
                isinstance(words, list)
                and words
                and all(isinstance(w, str) and w.strip() for w in words)
            ):
                return Text(None, None, tuple(w.lower() for w in words))
            self.bad(at + ".keywords", "must be a non-empty list of non-empty strings")
            return None
        self.bad(at, "must be {regex: ...}, {contains: ...} or {keywords: [...]}")
        return None

    def c_any(self, raw: object, at: str) -> Cond | None:
        if not isinstance(raw, list) or not raw:
            self.bad(at, "must be a non-empty list of condition mappings (one must hold)")
            return None
        branches = [self.conditions(item, f"{at}[{i}]") for i, item in enumerate(raw)]
        ok = [b for b in branches if b is not None]
        return AnyOf(ok) if len(ok) == len(branches) else None

    def c_not(self, raw: object, at: str) -> Cond | None:
        inner = self.conditions(raw, at)
        return None if inner is None else Not(inner)


def _number(name: str) -> Callable[[_Parser, object, str], Cond | None]:
    get, body = _NUMBERS[name]

    def parse(self: _Parser, raw: object, at: str) -> Cond | None:
        ops = self.numbers(raw, at)
        return None if ops is None else Num(name, get, ops, body)

    return parse


def _finite(v: object) -> bool:
    return (type(v) is int or type(v) is float) and math.isfinite(v)


_CONDS: Mapping[str, Callable[[_Parser, object, str], Cond | None]] = {
    "path": _Parser.c_path,
    "model": _Parser.c_model,
    "protocol": _Parser.c_protocol,
    "header": _Parser.c_header,
    "tenant": _Parser.c_tenant,
    "has": _Parser.c_has,
    "body_field": _Parser.c_body_field,
    **{name: _number(name) for name in _NUMBERS},
    "last_user_message": _Parser.c_last_user_message,
    "any": _Parser.c_any,
    "not": _Parser.c_not,
}
