from __future__ import annotations

import dataclasses
import json

from extproc.core.request import InferenceRequest, RequestHead
from extproc.core.rewrite import for_upstream
from tests.unit.helpers import run_flow, set_headers, state_for


def _req(
    protocol: str, path: str, body: dict[str, object] | None = None, **hdrs: str
) -> InferenceRequest:
    head = RequestHead("POST", path, {k.replace("_", "-"): v for k, v in hdrs.items()})
    return InferenceRequest(protocol, "a", None, head, body)  # type: ignore[arg-type]


def test_nothing_changed_means_no_rewrite() -> None:
    r = _req("openai", "/v1/chat/completions", {"model": "a"})
    assert for_upstream(r, r) is None


def test_openai_body_model_and_length() -> None:
    r = _req("openai", "/v1/chat/completions", {"model": "a", "n": 1}, content_encoding="gzip")
    rw = for_upstream(r, dataclasses.replace(r, model="b", version="2"))
    assert rw is not None and rw.body is not None
    assert json.loads(rw.body) == {"model": "b", "n": 1}
    assert dict(rw.set_headers) == {"content-length": str(len(rw.body)), "x-model-version": "2"}
    assert rw.remove_headers == ("content-encoding",)


def test_kserve_path_keeps_query() -> None:
    r = _req("kserve_v2", "/v2/models/a/versions/1/infer?trace=1")
    rw = for_upstream(r, dataclasses.replace(r, model="org/b", version=None))
    assert rw is not None and dict(rw.set_headers) == {":path": "/v2/models/org/b/infer?trace=1"}


def test_generic_sets_x_model() -> None:
    r = _req("generic", "/score", x_model="a", x_model_version="1")
    rw = for_upstream(r, dataclasses.replace(r, model="b"))
    assert rw is not None
    assert dict(rw.set_headers) == {"x-model": "b"}
    assert rw.remove_headers == ("x-model-version",)


def test_headers_only_rule_rewrites_the_kserve_path() -> None:
    state = state_for(
        """
models:
  resnet50: {protocol: kserve_v2, versions: ["1"]}
  resnet50-int8: {protocol: kserve_v2, versions: ["1"]}
deployments:
  - {name: a, model: resnet50, version: "1", endpoints: ["127.0.0.1:1"]}
  - {name: b, model: resnet50-int8, version: "1", endpoints: ["127.0.0.1:2"]}
rules:
  - name: tenant-free-tier
    when: {tenant: free, model: resnet50}
    route: {model: resnet50-int8}
"""
    )
    flow, [resp] = run_flow(
        state, "POST", "/v2/models/resnet50/infer", [("x-tenant-id", "free")], b"{}"
    )
    assert resp is not None and resp.HasField("mode_override")  # still headers-only
    hdrs = set_headers(resp)
    assert hdrs[":path"] == "/v2/models/resnet50-int8/infer"
    assert hdrs["x-model-router-model"] == "resnet50-int8"
    assert flow.outcome.rule is not None and flow.outcome.rule.rule == "tenant-free-tier"
