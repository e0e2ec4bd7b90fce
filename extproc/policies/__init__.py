"""Selection policies, chosen by name in the routing file."""

from __future__ import annotations

from extproc.policies.base import Picker
from extproc.policies.round_robin import RoundRobin
from extproc.policies.weighted_random import WeightedRandom

PICKERS: dict[str, type[Picker]] = {
    RoundRobin.name: RoundRobin,
    WeightedRandom.name: WeightedRandom,
}


def make_picker(name: str) -> Picker:
    try:
        return PICKERS[name]()
    except KeyError:
        raise ValueError(f"unknown picker {name!r}; known: {', '.join(sorted(PICKERS))}") from None


__all__ = ["PICKERS", "Picker", "make_picker"]
