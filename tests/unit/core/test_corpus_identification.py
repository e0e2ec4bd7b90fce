"""Every corpus case through the real request flow (the same code the server runs)."""

from __future__ import annotations

import json

import pytest

from extproc.core.errors import SpecViolation
from extproc.core.flow import Phase, RouterState
from tests.corpus import Case, corpus_routes, load_cases, require_corpus
from tests.unit.helpers import run_flow, state_for

CASES = load_cases()


@pytest.fixture(scope="module")
def state() -> RouterState:
    require_corpus()
    return state_for(corpus_routes({}))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_case_outcome_matches_the_corpus(case: Case, state: RouterState) -> None:
    headers = [(k.lower(), v) for k, v in case.headers.items()]
    flow, _ = run_flow(state, case.method, case.path, headers, case.body)
    out = flow.outcome
    assert flow.phase is Phase.DONE
    expect = case.expect
    if case.routable:
        assert out.error is None, out.error
        assert out.request is not None and out.decision is not None
        assert out.request.protocol == expect["protocol"]
        assert out.request.model == expect["model"]
        assert out.request.version == expect["version"]
        if expect["version"] is not None:
            assert out.decision.version == expect["version"]
        # OpenAI needs the body to find the model; KServe only because these models
        # declare specs; generic requests never send the body to the router.
        assert out.used_body == (expect["protocol"] != "generic")
        if case.needs_spec:
            assert out.checks, "spec checks should have run"
    else:
        err = out.error
        assert err is not None, f"expected {expect['status']}, got routed"
        assert (err.status, err.field) == (expect["status"], expect["field"]), err
        json.dumps({"message": err.message, "field": err.field})
        if isinstance(err, SpecViolation):
            assert err.message and not err.message.startswith(err.rule + ":")


def test_corpus_has_cases() -> None:
    cases = require_corpus()
    assert len(cases) >= 60 and len([c for c in cases if c.routable]) >= 30
