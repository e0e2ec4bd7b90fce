"""The corpus' routable cases: protocol, model and version identified as documented."""

from __future__ import annotations

import pytest

from extproc.flow import Phase
from tests.corpus import Case, corpus_routes, load_cases, require_corpus
from tests.unit.helpers import run_flow, state_for

ROUTABLE = [c for c in load_cases() if c.routable]
# Issue-3 scope: rejections decided by identification, size and parsing (not by specs).
IDENTIFICATION_REJECTS = [
    c
    for c in load_cases()
    if (not c.routable and c.expect["status"] in (404, 413, 415)) or c.id in (
        "reject-missing-model", "reject-generic-without-x-model", "reject-malformed-json",
        "reject-non-utf8-body", "reject-empty-body", "reject-huge-number",
        "reject-deeply-nested-json",
    )
]  # fmt: skip


@pytest.fixture(scope="module")
def state():  # type: ignore[no-untyped-def]
    require_corpus()
    return state_for(corpus_routes({}))


@pytest.mark.parametrize("case", ROUTABLE, ids=lambda c: c.id)
def test_routable_case_is_identified(case: Case, state) -> None:  # type: ignore[no-untyped-def]
    flow, _ = run_flow(state, case.method, case.path, list(case.headers.items()), case.body)
    out = flow.outcome
    assert out.error is None, out.error
    assert out.request is not None and out.decision is not None
    assert out.request.protocol == case.expect["protocol"]
    assert out.request.model == case.expect["model"]
    assert out.request.version == case.expect["version"]
    if case.expect["version"] is not None:
        assert out.decision.version == case.expect["version"]
    # Only OpenAI paths need the body to identify the model.
    assert out.used_body == (case.expect["protocol"] == "openai")
    assert flow.phase is Phase.DONE


@pytest.mark.parametrize("case", IDENTIFICATION_REJECTS, ids=lambda c: c.id)
def test_identification_reject_case(case: Case, state) -> None:  # type: ignore[no-untyped-def]
    flow, _ = run_flow(state, case.method, case.path, list(case.headers.items()), case.body)
    err = flow.outcome.error
    assert err is not None
    assert err.status == case.expect["status"]
    if err.status in (404, 413, 415) or case.expect["field"] == "/model":
        assert err.field == case.expect["field"]


def test_corpus_has_cases() -> None:
    cases = require_corpus()
    assert len([c for c in cases if c.routable]) >= 30
