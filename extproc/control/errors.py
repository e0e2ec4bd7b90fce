"""Errors of the control plane: configuration that cannot be used, with every problem."""

from __future__ import annotations


class ProblemsError(ValueError):
    """Input that cannot be used; ``problems`` lists every finding, each naming its place
    (a key path, a JSON Pointer or a line)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class ConfigError(ProblemsError):
    """A routing file that cannot be loaded or compiled; ``source`` is the file."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(problems)
        self.source = source
        self.args = (f"{source}: " + "; ".join(problems),)


class SpecError(ProblemsError):
    """Model specs that cannot be used; each problem is ``pointer: what``."""


class RulesError(ProblemsError):
    """An invalid ``rules:`` section; each problem names its path (``rules[2].when...``)."""
