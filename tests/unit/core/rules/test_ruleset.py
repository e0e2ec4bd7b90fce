"""Content rules (``extproc.core.rules.ruleset``): every condition and action, evaluation
order, headers-only behaviour, never raising on hostile bodies. Parsing and validating
rules is ``tests/unit/control/compile/test_rules.py``'s; evaluation cost is
``python -m loadtest.rules_cost``."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc.control.compile.rules import compile_rules
from extproc.core.capabilities import Requirement
from extproc.core.request import InferenceRequest, ProtocolName, RequestHead
from extproc.core.rules.ruleset import RuleMatch, RuleSet
from tests.unit.strategies import yaml_values

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
INFER = "/v2/models/resnet50/infer"


def req(
    body: dict[str, Any] | None = None,
    *,
    model: str = "chat-small",
    protocol: ProtocolName = "openai",
    path: str = CHAT,
    headers: dict[str, str] | None = None,
    version: str | None = None,
) -> InferenceRequest:
    head = RequestHead("POST", path, headers or {})
    return InferenceRequest(protocol, model, version, head, body, source="test")


def chat(*texts: str, **extra: Any) -> dict[str, Any]:
    msgs = [{"role": "user", "content": t} for t in texts]
    return {"model": "chat-small", "messages": msgs, **extra}


def infer(batch: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [batch, 3], "data": []}]}


def rules(text: str, **kw: Any) -> RuleSet:
    return compile_rules(yaml.safe_load(text), **kw)


def one(when: str, route: str = "{model: chat-large}") -> RuleSet:
    return rules(f"- {{name: r, when: {when}, route: {route}}}")


def hit(rs: RuleSet, request: InferenceRequest) -> str | None:
    m = rs.evaluate(request)
    return None if m is None else m.rule


BRIEF = """
- name: tools-or-long-prompts-to-large
  when:
    path: /v1/chat/completions
    model: chat-small
    any:
      - has: [tools]
      - prompt_chars: {gt: 4000}
      - messages: {gte: 12}
      - max_tokens: {gt: 1024}
  route:
    model: chat-large
- name: medical
  when:
    last_user_message: {regex: "(?i)\\\\b(patient|diagnos\\\\w*|symptoms?)\\\\b"}
  route:
    capabilities: "domain=medical"
- name: medical-by-metadata
  when: {body_field: {pointer: /metadata/domain, equals: medical}}
  route: {capabilities: "domain=medical"}
- name: big-batches-to-gpu
  when: {protocol: kserve_v2, batch_size: {gte: 32}}
  route: {capabilities: {accelerator: gpu}}
- name: tenant-acme-canary
  when: {tenant: acme, header: {x-canary: {regex: "^(1|true)$"}}}
  route: {version: "2"}
"""


@pytest.fixture(scope="module")
def brief() -> RuleSet:
    return rules(BRIEF)


# --------------------------------------------------------------------------- the API


def test_brief_example_parses(brief: RuleSet) -> None:
    assert len(brief) == 5
    assert brief.names[0] == "tools-or-long-prompts-to-large"
    assert brief.target_models() == {"chat-large"}
    assert "medical" in repr(brief)
    assert compile_rules(None).names == ()
    assert len(compile_rules([])) == 0


def test_why_names_the_rule_and_the_deciding_values(brief: RuleSet) -> None:
    m = brief.evaluate(req(chat("x" * 5230)))
    assert m is not None
    assert m.why == (
        "rule 'tools-or-long-prompts-to-large': path is /v1/chat/completions; "
        "model is chat-small; any: prompt_chars 5230 > 4000"
    )
    assert m.action.model == "chat-large"
    assert m.action.version is None
    assert m.action.capabilities == ()


def test_first_match_wins(brief: RuleSet) -> None:
    body = chat("the patient has symptoms", tools=[{"type": "function"}])
    assert hit(brief, req(body)) == "tools-or-long-prompts-to-large"
    assert hit(brief, req(body, model="chat-other")) == "medical"
    rs = rules("""
    - {name: a, when: {model: m}, route: {version: "1"}}
    - {name: b, when: {model: m}, route: {version: "2"}}
    """)
    assert hit(rs, req({}, model="m")) == "a"
    assert hit(rs, req({}, model="n")) is None


# --------------------------------------------------------------------------- conditions


def test_path_exact_list_regex() -> None:
    assert hit(one("{path: /v1/chat/completions}"), req({})) == "r"
    assert hit(one("{path: /v1/completions}"), req({})) is None
    assert hit(one("{path: [/v1/completions, /v1/chat/completions]}"), req({})) == "r"
    assert hit(one("{path: {regex: '^/v1/'}}"), req({}, path=CHAT + "?x=1")) == "r"
    assert hit(one("{path: {regex: '^/v2/'}}"), req({})) is None


def test_model_string_or_list() -> None:
    assert hit(one("{model: chat-small}"), req({})) == "r"
    assert hit(one("{model: [a, chat-small]}"), req({})) == "r"
    assert hit(one("{model: [a, b]}"), req({})) is None
    assert hit(one("{model: {regex: '^chat-'}}"), req({})) == "r"


def test_protocol() -> None:
    rs = one("{protocol: kserve_v2}")
    assert hit(rs, req(None, protocol="kserve_v2", path=INFER)) == "r"
    assert hit(rs, req({})) is None
    assert hit(one("{protocol: [openai, generic]}"), req({})) == "r"


def test_headers_and_tenant() -> None:
    rs = one("{header: {X-Canary: {regex: '^(1|true)$'}, x-team: [a, b]}}")
    assert hit(rs, req({}, headers={"x-canary": "true", "x-team": "b"})) == "r"
    assert hit(rs, req({}, headers={"x-canary": "yes", "x-team": "b"})) is None
    assert hit(rs, req({}, headers={"x-canary": "1"})) is None  # missing header never matches
    assert hit(one("{tenant: acme}"), req({}, headers={"x-tenant-id": "acme"})) == "r"
    assert hit(one("{tenant: acme}"), req({}, headers={"x-org": "acme"})) is None
    custom = rules(
        "- {name: r, when: {tenant: [acme, beta]}, route: {version: '2'}}", tenant_header="X-Org"
    )
    assert custom.tenant_header == "x-org"
    assert hit(custom, req({}, headers={"x-org": "beta"})) == "r"


def test_brief_canary(brief: RuleSet) -> None:
    m = brief.evaluate(req(None, headers={"x-tenant-id": "acme", "x-canary": "1"}, model="zz"))
    assert m is not None and m.rule == "tenant-acme-canary" and m.action.version == "2"
    assert "tenant is acme" in m.why and "header x-canary matches" in m.why


def test_has() -> None:
    rs = one("{has: [tools, tool_choice]}")
    assert hit(rs, req(chat("a", tools=[], tool_choice="auto"))) == "r"
    assert hit(rs, req(chat("a", tools=[], tool_choice=None))) is None  # null is absent
    assert hit(rs, req(chat("a", tools=[]))) is None
    assert hit(one("{has: tools}"), req(chat("a", tools=[1]))) == "r"


def test_body_field_equals_regex_exists_numbers() -> None:
    body = chat("a", metadata={"domain": "medical", "a/b": {"~k": [0, 7]}, "flag": True, "n": 1})
    cases = {
        "{pointer: /metadata/domain, equals: medical}": True,
        "{pointer: /metadata/domain, equals: legal}": False,
        "{pointer: /metadata/domain, regex: '^med'}": True,
        "{pointer: /metadata/a~1b/~0k/1, equals: 7}": True,
        "{pointer: /metadata/a~1b/~0k/2, exists: true}": False,
        "{pointer: /metadata/a~1b/~0k/1, gt: 5, lte: 7}": True,
        "{pointer: /metadata/a~1b/~0k/1, gt: 7}": False,
        "{pointer: /metadata/missing, exists: false}": True,
        "{pointer: /metadata/domain, exists: true}": True,
        "{pointer: /metadata/flag, equals: true}": True,
        "{pointer: /metadata/n, equals: true}": False,  # 1 is not true
        "{pointer: /metadata/flag, equals: 1}": False,
        "{pointer: /metadata/flag, gt: 0}": False,  # booleans are not numbers
        "{pointer: /messages/0/role, equals: user}": True,
        "{pointer: /messages/00/role, equals: user}": False,  # not an index
        "{pointer: /metadata/domain/x, exists: true}": False,
    }
    for spec, want in cases.items():
        assert (hit(one(f"{{body_field: {spec}}}"), req(body)) == "r") is want, spec


def test_body_field_equals_null() -> None:
    rs = one("{body_field: {pointer: /user, equals: null}}")
    assert hit(rs, req({"user": None})) == "r"
    assert hit(rs, req({})) is None


def test_numeric_conditions() -> None:
    assert hit(one("{messages: {gte: 3}}"), req(chat("a", "b", "c"))) == "r"
    assert hit(one("{messages: {gte: 3}}"), req(chat("a", "b"))) is None
    assert hit(one("{messages: {eq: 2}}"), req(chat("a", "b"))) == "r"
    parts = {
        "role": "user",
        "content": [{"type": "text", "text": "héllo"}, {"type": "image_url", "image_url": {}}],
    }
    body = {"messages": [{"role": "system", "content": "abc"}, parts]}
    assert hit(one("{prompt_chars: {eq: 8}}"), req(body)) == "r"  # code points
    assert hit(one("{prompt_chars: {gt: 3}}"), req({"prompt": "abcd"}, path=COMPLETIONS)) == "r"
    mt = one("{max_tokens: {gt: 1024}}")
    assert hit(mt, req(chat("a", max_tokens=10, max_completion_tokens=2000))) == "r"
    assert hit(mt, req(chat("a", max_tokens=2000))) == "r"
    assert hit(mt, req(chat("a", max_tokens=1000))) is None
    assert hit(mt, req(chat("a"))) is None  # missing never matches
    assert hit(one("{max_tokens: {lt: 10}}"), req(chat("a"))) is None
    assert hit(one("{messages: {lt: 100}}"), req({"messages": "x"})) is None


def test_batch_size() -> None:
    rs = one("{batch_size: {gte: 32}}", "{capabilities: accelerator=gpu}")
    kserve = {"protocol": "kserve_v2", "path": INFER, "model": "resnet50"}
    assert hit(rs, req(infer(64), **kserve)) == "r"
    assert hit(rs, req(infer(8), **kserve)) is None
    assert hit(rs, req(infer(True), **kserve)) is None
    assert hit(rs, req({"inputs": []}, **kserve)) is None
    assert hit(rs, req(infer(64))) is None  # only KServe bodies have a batch size


def test_last_user_message() -> None:
    rx = one(r"{last_user_message: {regex: '(?i)\bpatient\b'}}")
    body = {
        "messages": [
            {"role": "user", "content": "my patient"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "about the Patient"}]},
        ]
    }
    assert hit(rx, req(body)) == "r"
    body["messages"][2] = {"role": "user", "content": "something else"}
    assert hit(rx, req(body)) is None  # only the LAST user message counts
    contains = one("{last_user_message: {contains: Patient}}")
    assert hit(contains, req(chat("the Patient"))) == "r"
    assert hit(contains, req(chat("the patient"))) is None  # case-sensitive
    assert hit(contains, req({"messages": [{"role": "system", "content": "Patient"}]})) is None


def test_any_and_not() -> None:
    rs = one("{any: [{has: [tools]}, {messages: {gte: 3}, model: chat-small}]}")
    assert hit(rs, req(chat("a", tools=[1]))) == "r"
    assert hit(rs, req(chat("a", "b", "c"))) == "r"
    assert hit(rs, req(chat("a", "b", "c"), model="x")) is None
    assert hit(rs, req(chat("a"))) is None
    m = rs.evaluate(req(chat("a", "b", "c")))
    assert m is not None and m.why == "rule 'r': any: model is chat-small, messages 3 >= 3"
    nt = one("{model: chat-large, not: {has: [tools]}}", "{model: chat-small}")
    assert hit(nt, req(chat("a"), model="chat-large")) == "r"
    assert hit(nt, req(chat("a", tools=[1]), model="chat-large")) is None


# --------------------------------------------------------------------------- actions


def test_actions() -> None:
    rs = rules("""
    - name: all
      when: {model: m}
      route: {model: big, version: 3, capabilities: {domain: medical, max_context: 8192}}
    - {name: caps, when: {model: n}, route: {capabilities: "tier!=free,max_context>=4096"}}
    """)
    m = rs.evaluate(req({}, model="m"))
    assert m is not None
    assert (m.action.model, m.action.version) == ("big", "3")
    assert m.action.capabilities == (
        Requirement("domain", "=", "medical"),
        Requirement("max_context", "=", "8192"),
    )
    m2 = rs.evaluate(req({}, model="n"))
    assert m2 is not None and [str(c) for c in m2.action.capabilities] == [
        "tier!=free",
        "max_context>=4096",
    ]
    assert rs.target_models() == {"big"}


def test_apply() -> None:
    rs = rules("""
    - {name: up, when: {model: small}, route: {model: large}}
    - {name: med, when: {model: mid}, route: {capabilities: domain=medical}}
    """)
    r = req({}, model="small", version="2")
    m = rs.evaluate(r)
    assert isinstance(m, RuleMatch)
    out = m.apply(r)
    assert (out.model, out.version, out.source) == ("large", None, "test, rule 'up'")
    r2 = req({}, model="mid", version="2")
    m2 = rs.evaluate(r2)
    assert m2 is not None
    out2 = m2.apply(r2)
    assert (out2.model, out2.version, str(out2.capabilities[0])) == ("mid", "2", "domain=medical")


# --------------------------------------------------------------------------- body or not


def test_needs_body_for_a_head_identified_request() -> None:
    rs = rules("""
    - {name: canary, when: {header: {x-canary: "1"}}, route: {version: "2"}}
    - {name: gpu, when: {model: resnet50, batch_size: {gte: 32}}, route: {capabilities: accelerator=gpu}}
    """)
    kserve = {"protocol": "kserve_v2", "path": INFER}
    assert rs.needs_body_for(req(None, model="resnet50", **kserve))
    assert not rs.needs_body_for(req(None, model="fraud", **kserve))  # gpu cannot hold
    canary = req(None, model="resnet50", headers={"x-canary": "1"}, **kserve)
    assert not rs.needs_body_for(canary)  # an earlier head-only rule decides
    assert not compile_rules(None).needs_body_for(canary)


def test_without_a_body_body_rules_do_not_apply() -> None:
    rs = rules("""
    - {name: small, when: {not: {batch_size: {gte: 32}}}, route: {capabilities: accelerator=cpu}}
    - {name: any, when: {any: [{has: [x]}, {model: m}]}, route: {version: "1"}}
    - {name: fallback, when: {protocol: kserve_v2}, route: {version: "2"}}
    """)
    kserve = {"protocol": "kserve_v2", "path": INFER}
    assert hit(rs, req(None, model="m", **kserve)) == "any"  # not(unknown) is unknown
    assert hit(rs, req(None, model="z", **kserve)) == "fallback"
    assert hit(rs, req(infer(1), model="z", **kserve)) == "small"
    # an openai-only condition is simply false for KServe, so not() of it holds
    nt = one("{not: {messages: {gt: 1}}}")
    assert hit(nt, req(None, model="z", **kserve)) == "r"


# --------------------------------------------------------------------------- never raises

KEYS = st.sampled_from(
    [
        "messages",
        "tools",
        "prompt",
        "input",
        "suffix",
        "max_tokens",
        "max_completion_tokens",
        "metadata",
        "inputs",
        "model",
        "role",
        "content",
        "type",
        "text",
        "shape",
        "domain",
        "0",
    ]
)
ROLE = st.sampled_from(["user", "system", "assistant", 3, None])
MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "role": ROLE,
        "content": st.one_of(
            yaml_values,
            st.lists(
                st.fixed_dictionaries(
                    {}, optional={"type": st.just("text") | yaml_values, "text": yaml_values}
                )
            ),
        ),
    },
)
BODY = st.dictionaries(
    KEYS,
    st.one_of(
        yaml_values,
        st.lists(MESSAGE, max_size=4),
        st.dictionaries(KEYS, yaml_values, max_size=4),
        st.lists(
            st.fixed_dictionaries({}, optional={"shape": yaml_values | st.lists(yaml_values)}),
            max_size=2,
        ),
    ),
    max_size=8,
)
EVERYTHING = """
- {name: a, when: {any: [{has: [tools, metadata]}, {prompt_chars: {gt: 3}}, {messages: {gte: 2}}, {max_tokens: {lt: 5, gt: 1}}]}, route: {model: x}}
- {name: b, when: {last_user_message: {regex: "(?i)pat"}}, route: {model: x}}
- {name: c, when: {last_user_message: {contains: "a"}}, route: {model: x}}
- {name: d, when: {body_field: {pointer: /metadata/domain, equals: medical}}, route: {model: x}}
- {name: e, when: {body_field: {pointer: /messages/0/content/0/text, regex: "."}}, route: {model: x}}
- {name: f, when: {body_field: {pointer: /inputs/0/shape/0, gte: 0}}, route: {model: x}}
- {name: g, when: {body_field: {pointer: /metadata/0, exists: true}}, route: {model: x}}
- {name: h, when: {batch_size: {gte: 1}}, route: {model: x}}
- {name: i, when: {not: {body_field: {pointer: /model, equals: 3}}}, route: {model: x}}
"""


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=BODY,
    protocol=st.sampled_from(["openai", "kserve_v2", "generic"]),
    path=st.sampled_from([CHAT, COMPLETIONS, "/v1/embeddings", INFER, "/x"]),
)
def test_evaluate_never_raises(body: dict[str, Any], protocol: ProtocolName, path: str) -> None:
    rs = rules(EVERYTHING)
    for r in rs._rules:  # every rule on its own, so each one is evaluated
        single = RuleSet((r,))
        for request in (
            req(body, protocol=protocol, path=path),
            req(None, protocol=protocol, path=path),
        ):
            m = single.evaluate(request)
            assert m is None or (m.rule == r.name and m.why.startswith(f"rule {r.name!r}: "))
            single.needs_body_for(request)


def test_last_user_message_keywords_ignore_case() -> None:
    rules = compile_rules(
        [{"name": "med", "when": {"last_user_message": {"keywords": ["Patient", "diagnos"]}},
          "route": {"capabilities": "domain=medical"}}]
    )  # fmt: skip

    def req(text: str) -> InferenceRequest:
        body = {"model": "m", "messages": [{"role": "user", "content": text}]}
        head = RequestHead("POST", "/v1/chat/completions", {})
        return InferenceRequest("openai", "m", None, head, body)

    assert rules.evaluate(req("My PATIENT is fine")) is not None
    assert rules.evaluate(req("a misdiagnosis")) is not None
    assert rules.evaluate(req("nothing here")) is None
