"""Scorers against their hot-path forms: the sparse prefix scores and the profile's
cached weighted sums give what the plain dense scores give (no sockets)."""

from __future__ import annotations

import time

from extproc.core.flow import RouterState
from extproc.core.protocols import NeedsBody, understand_body, understand_head
from extproc.core.request import InferenceRequest, RequestHead
from extproc.core.scheduling.framework import Candidate, SchedulingRequest
from extproc.core.scheduling.profile import ScheduleTrace
from extproc.core.scheduling.scheduler import candidates_of
from extproc.core.scheduling.scorers.prefix_cache import PrefixCache
from extproc.core.signals import EndpointLatency, EndpointLoad, LoadSnapshot, SignalBoard
from tests.unit.helpers import state_for

# Endpoint 127.0.0.1:3 is in both deployments: a score must reach both positions.
ROUTES = """
scheduling: {profile: p, profiles: {p: {scorers: [
  {type: prefix_cache, weight: 3}, {type: least_inflight, weight: 0.7},
  {type: least_busy_time, weight: 1.3}, {type: queue, weight: 1.1}], picker: max_score}}}
models: {chat: {protocol: openai, versions: ['1']}}
deployments:
  - {name: a, model: chat, version: '1', endpoints: ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3']}
  - {name: b, model: chat, version: '1', endpoints: ['127.0.0.1:3', '127.0.0.1:4']}
"""


def _chat(system: str) -> InferenceRequest:
    head = RequestHead("POST", "/v1/chat/completions", {"content-type": "application/json"})
    body = (
        b'{"model":"chat","messages":[{"role":"system","content":"' + system.encode() * 20
        + b'"},{"role":"user","content":"hi"}]}'
    )  # fmt: skip
    need = understand_head(head)
    assert isinstance(need, NeedsBody)
    return understand_body(head, need, body, 1 << 20)


def _scheduling(
    board: SignalBoard, request: InferenceRequest, state: RouterState | None = None
) -> tuple[SchedulingRequest, tuple[Candidate, ...]]:
    state = state or state_for(ROUTES)
    assert state.snapshot is not None
    model = state.snapshot.models["chat"]
    req = SchedulingRequest(request, model, None, (), None, board, time.monotonic())
    return req, candidates_of(model)


def test_prefix_sparse_scores_are_the_dense_scores_without_the_zeros() -> None:
    scorer = PrefixCache()
    req, cands = _scheduling(SignalBoard(), _chat("You are a helpful assistant. "))
    assert scorer.score_sparse(req, cands) == {}  # nothing learned yet
    assert scorer.score(req, cands) == [0.0] * len(cands)
    scorer.picked(req, cands[2])  # 127.0.0.1:3 of deployment a
    dense = scorer.score(req, cands)
    assert dense == [0.0, 0.0, 1.0, 1.0, 0.0]  # the address in both deployments
    assert scorer.score_sparse(req, cands) == {2: 1.0, 3: 1.0}
    other, _ = _scheduling(SignalBoard(), _chat("You translate. "))
    assert scorer.score_sparse(other, cands) == {}


def test_the_hot_path_weighted_sum_is_the_traced_one() -> None:
    """Bit for bit, not approximately: max_score breaks ties by equality, so explain must
    show the sums the hot path picks on. Weights that are not powers of two, durations
    and queues that differ, in-flight counts that grow; the same pool each round, so the
    cached snapshot sums are reused (and must not be changed by the request's own)."""
    state = state_for(ROUTES)
    profile = state.scheduler.profiles["p"]
    board = SignalBoard("t")
    addresses = [f"127.0.0.1:{i}" for i in range(1, 5)]
    board.latency = {
        a: EndpointLatency(ttfb_s=0.05 * i, duration_s=0.3 + 0.07 * i, samples=5)
        for i, a in enumerate(addresses)
    }
    far = time.monotonic() + 3600
    board.load = LoadSnapshot(
        {
            a: EndpointLoad(waiting=i % 3, running=1, kv_usage=0.1, at=far)
            for i, a in enumerate(addresses)
        }
    )
    request = _chat("You are a helpful assistant. ")
    cached: list[float] | None = None
    for round_ in range(8):
        req, cands = _scheduling(board, request, state)
        fast = profile.score(req, cands)
        if cached is None:
            cached = list(profile._static[4])  # type: ignore[index]
        traced = profile.score(_scheduling(board, request, state)[0], cands, ScheduleTrace())
        assert fast is not None and traced is not None
        assert fast == traced, round_
        assert profile._static[4] == cached  # type: ignore[index]
        picked = profile.pick(("chat", None, ()), req, cands)  # teaches the prefix scorer
        board.inflight.acquire(picked[0].address, f"r{round_}")
        board.inflight.acquire(addresses[round_ % 4], f"x{round_}")
