"""Content rules: the routing file's ``rules:``, checked in order; the first that holds applies.

A rule's ``when`` is a map of conditions that must all hold (``any:`` holds a
list of such maps, one of which must hold; ``not:`` one map that must not);
its ``route`` changes the model, the version and/or adds capability
requirements. Everything is validated and compiled (regexes, JSON Pointers) by
:func:`extproc.control.compile.rules.compile_rules`; :meth:`RuleSet.evaluate` only
reads the request and never raises, whatever the body holds. Without a body (headers-only routing) a
rule whose outcome depends on the body does not apply. See ``docs/rules.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from extproc.core.capabilities import Requirements
from extproc.core.request import InferenceRequest
from extproc.core.rules.conditions import All, Ctx, Head, ProtocolIs

__all__ = ["CompiledRule", "RuleAction", "RuleMatch", "RuleSet"]


@dataclass(frozen=True, slots=True)
class RuleAction:
    model: str | None
    version: str | None
    capabilities: Requirements


@dataclass(frozen=True, slots=True)
class RuleMatch:
    rule: str
    action: RuleAction
    why: str

    def apply(self, request: InferenceRequest) -> InferenceRequest:
        """``request`` with the action applied: a new model drops a version the rule did
        not set (it named the old model's version); capabilities are added."""
        a = self.action
        model = a.model or request.model
        version = a.version or (request.version if model == request.model else None)
        return dataclasses.replace(
            request,
            model=model,
            version=version,
            capabilities=request.capabilities + a.capabilities,
            source=f"{request.source}, rule {self.rule!r}" if request.source else self.rule,
        )


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    when: All
    action: RuleAction

    def may_apply(self, model: str, protocol: str) -> bool:
        """False only when the rule's own top-level ``model`` or ``protocol`` conditions
        rule out requests for ``model`` over ``protocol`` (conservative: True otherwise)."""
        for c in self.when.conds:
            if isinstance(c, ProtocolIs) and protocol not in c.names:
                return False
            if isinstance(c, Head) and c.label == "model" and not c.match(model):
                return False
        return True

    def match(self, ctx: Ctx) -> RuleMatch:
        return RuleMatch(
            self.name, self.action, f"rule {self.name!r}: " + self.when.explain(ctx, "; ")
        )


class RuleSet:
    """The compiled ``rules:`` list; see the module docstring and ``docs/rules.md``."""

    __slots__ = ("_rules", "tenant_header")

    def __init__(
        self, rules: tuple[CompiledRule, ...] = (), tenant_header: str = "x-tenant-id"
    ) -> None:
        self._rules = rules
        self.tenant_header = tenant_header

    def __len__(self) -> int:
        return len(self._rules)

    def __repr__(self) -> str:
        return f"RuleSet({list(self.names)!r}, tenant_header={self.tenant_header!r})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self._rules)

    def needs_body_for(self, request: InferenceRequest) -> bool:
        """Whether the body of ``request`` (identified from its head) could change which
        rule applies: ``False`` when the first rule that can hold holds on the head alone,
        or none can."""
        ctx = Ctx(request)  # peek never reads the body
        for rule in self._rules:
            v = rule.when.peek(ctx)
            if v is not False:
                return v is None
        return False

    def evaluate(self, request: InferenceRequest) -> RuleMatch | None:
        """The first rule that holds for ``request``, or ``None``. Never raises."""
        ctx = Ctx(request)
        if request.body is None:
            for rule in self._rules:
                if rule.when.peek(ctx) is True:
                    return rule.match(ctx)
            return None
        for rule in self._rules:
            if rule.when.test(ctx):
                return rule.match(ctx)
        return None

    def may_apply(self, model: str, protocol: str) -> list[str]:
        """The rules that could apply to a request for ``model`` over ``protocol``."""
        return [r.name for r in self._rules if r.may_apply(model, protocol)]

    def target_models(self) -> set[str]:
        return {r.action.model for r in self._rules if r.action.model is not None}
