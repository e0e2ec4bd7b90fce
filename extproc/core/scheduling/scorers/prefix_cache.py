"""Approximate prefix-cache affinity: prefers the endpoint that most recently served the
longest run of this prompt's leading blocks, so repeated system prompts and
conversations land where their KV cache is likely still warm.

No tokenizer: the prompt text (chat messages, completion prompt, responses input) is cut
into ``block_chars`` blocks, each hashed with the hash of the blocks before it; the
scorer remembers, per block hash, the endpoints its own picks sent it to (LRU, at most
``capacity`` hashes). A candidate scores the share of the prompt's leading blocks it
holds. Like the GIE approximate prefix scorer, it learns from its own picks only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from extproc.core.scheduling.framework import Candidate, SchedulingRequest, Scorer
from extproc.core.usage import prompt_text

_KEY = "prefix_cache.hashes"


@dataclass(frozen=True, slots=True)
class PrefixCacheParams:
    block_chars: int = 256
    """Characters per block (about 64 tokens of English text)."""
    max_blocks: int = 128
    """Leading blocks hashed per request (longer prompts: their first blocks decide)."""
    capacity: int = 200_000
    """Block hashes remembered in all; the least recently used go first."""


class PrefixCache(Scorer):
    name = "prefix_cache"
    Params = PrefixCacheParams
    sparse = True

    def __init__(self, params: PrefixCacheParams | None = None) -> None:
        super().__init__(params)
        self._index: OrderedDict[int, dict[str, None]] = OrderedDict()
        self._positions: tuple[tuple[Candidate, ...], dict[str, list[int]]] | None = None
        """(candidates, positions by address) of the last pool scored sparsely (an address
        may be in two deployments of the pool)."""

    def __repr__(self) -> str:
        return f"PrefixCache(blocks={len(self._index)}, {self.params!r})"

    def _hashes(self, req: SchedulingRequest) -> list[int]:
        memo = req.scratch.get(_KEY)
        if memo is None:
            p: PrefixCacheParams = self.params
            text = prompt_text(req.request.body)
            memo, h = [], hash(req.request.model)
            for start in range(0, min(len(text), p.block_chars * p.max_blocks), p.block_chars):
                h = hash((h, text[start : start + p.block_chars]))
                memo.append(h)
            req.scratch[_KEY] = memo
        return memo

    def _matched(self, req: SchedulingRequest) -> dict[str, float]:
        """Share of the prompt's leading blocks each endpoint holds (those holding any)."""
        hashes = self._hashes(req)
        first = self._index.get(hashes[0]) if hashes else None
        if not first:
            return {}
        # Only endpoints holding the first block can match: walk the blocks for those.
        index, total = self._index, len(hashes)
        matched: dict[str, float] = {}
        for address in first:
            n = 1
            for h in hashes[1:]:
                holders = index.get(h)
                if holders is None or address not in holders:
                    break
                n += 1
            matched[address] = n / total
        return matched

    def score(self, req: SchedulingRequest, candidates: tuple[Candidate, ...]) -> list[float]:
        get = self._matched(req).get
        return [get(c.address, 0.0) for c in candidates]

    def score_sparse(
        self, req: SchedulingRequest, candidates: tuple[Candidate, ...]
    ) -> dict[int, float]:
        matched = self._matched(req)
        if not matched:
            return {}
        memo = self._positions
        if memo is None or memo[0] is not candidates:
            positions: dict[str, list[int]] = {}
            for i, c in enumerate(candidates):
                positions.setdefault(c.address, []).append(i)
            memo = self._positions = (candidates, positions)
        at = memo[1].get
        return {i: s for a, s in matched.items() for i in at(a, ())}

    def picked(self, req: SchedulingRequest, primary: Candidate) -> None:
        index, cap = self._index, self.params.capacity
        for h in self._hashes(req):
            holders = index.get(h)
            if holders is None:
                holders = index[h] = {}
                if len(index) > cap:
                    index.popitem(last=False)
            else:
                index.move_to_end(h)
            holders[primary.address] = None
