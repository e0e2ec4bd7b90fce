"""Scheduling plug-ins: filters narrow the candidates, a picker orders them.

Shaped after the Gateway API Inference Extension's scheduling framework
(filters -> scorers -> picker, plug-ins chosen by name in YAML). Scorers for
load-aware picking slot in between filters and the picker later.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable, Sequence
from typing import ClassVar

from extproc.registry.base import Endpoint


class Picker(abc.ABC):
    """Orders candidate endpoints: primary first, then fallbacks (at most ``n`` in all)."""

    name: ClassVar[str]

    @abc.abstractmethod
    def pick(self, key: Hashable, candidates: Sequence[Endpoint], n: int) -> list[Endpoint]:
        """``key`` identifies the candidate pool (model, version, requirements) for
        stateful pickers."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
