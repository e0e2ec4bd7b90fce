"""Which models Envoy routes natively, and the clusters and routes the router serves."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format

from extproc.control.compile import CompiledRouting, compile_routing
from extproc.control.errors import ConfigError
from extproc.control.loading import parse_config
from extproc.control.xds.clusters import build_clusters
from extproc.control.xds.plan import plan
from extproc.control.xds.routes import build_routes
from extproc.core.envoy_wire import cluster_stat_name
from tests.unit.helpers import state_for

ROUTES = """
models:
  k: {protocol: kserve_v2, versions: ["1", "2"]}
  g: {protocol: generic, versions: ["1"]}
  chat: {protocol: openai, versions: ["1"]}
  opt: {protocol: openai, versions: ["1"], native: true}
  kept: {protocol: kserve_v2, versions: ["1"], native: false}
deployments:
  - {name: k1, model: k, version: "1", endpoints: ["127.0.0.1:8001", "127.0.0.1:8002"]}
  - {name: k2, model: k, version: "2", endpoints: ["127.0.0.1:8003"], enabled: false}
  - {name: g1, model: g, version: "1", endpoints: ["127.0.0.1:8004"],
     health_check: {path: /ping}}
  - {name: c1, model: chat, version: "1", endpoints: ["127.0.0.1:8005"]}
  - {name: o1, model: opt, version: "1", endpoints: ["127.0.0.1:8006"]}
  - {name: f1, model: kept, version: "1", endpoints: ["127.0.0.1:8007"]}
"""


def compiled(text: str = ROUTES) -> CompiledRouting:
    return compile_routing(parse_config(text))


def plans(text: str = ROUTES) -> dict[str, Any]:
    state = state_for(text)
    assert state.snapshot is not None
    return {m: (p.native, p.native_openai, p.why) for m, p in
            plan(compiled(text), state.snapshot).items()}  # fmt: skip


def test_native_by_default_only_where_envoy_gives_the_routers_answer() -> None:
    found = plans()
    assert found["k"][:2] == (True, False) and found["g"][:2] == (True, False)
    assert found["chat"][0] is False and "set native: true" in found["chat"][2]
    assert found["opt"][:2] == (True, True) and "not checked" in found["opt"][2]
    assert found["kept"] == (False, False, "native: false")


def test_specs_rules_and_profiles_keep_a_model_on_the_router() -> None:
    text = (
        ROUTES.replace(
            'k: {protocol: kserve_v2, versions: ["1", "2"]}',
            'k: {protocol: kserve_v2, versions: ["1", "2"], spec: {kserve_v2: {inputs: []}}}',
        ).replace(
            'g: {protocol: generic, versions: ["1"]}',
            'g: {protocol: generic, versions: ["1"], scheduling: {picker: max_score}}',
        )
        + "rules: [{name: r, when: {model: kept, tenant: a}, route: {version: '1'}}]\n"
    )
    found = plans(text)
    assert not found["k"][0] and "spec 'k'" in found["k"][2]
    assert not found["g"][0] and "max_score" in found["g"][2]
    assert found["kept"][0] is False  # native: false wins over the rule's reason
    assert plans(text.replace("model: kept", "model: chat"))["k"][0] is False


def test_native_true_that_cannot_hold_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        compiled(ROUTES.replace(
            'opt: {protocol: openai, versions: ["1"], native: true}',
            'opt: {protocol: openai, versions: ["1"], native: true, '
            'spec: {openai: {max_tokens: 5}}}',
        ))  # fmt: skip
    assert info.value.problems == ["models.opt.native: true, but it has a spec"]


def _routes(text: str = ROUTES) -> list[dict[str, Any]]:
    state = state_for(text)
    assert state.snapshot is not None
    c = compiled(text)
    table = build_routes(c.config, state.snapshot, plan(c, state.snapshot), 2)
    doc = json_format.MessageToDict(table, preserving_proto_field_name=True)
    return list(doc["virtual_hosts"][0]["routes"])


def test_route_table_order_and_filters() -> None:
    routes = _routes()
    names = [r["name"] for r in routes]
    assert len(names) == len(set(names))  # every route has its own name
    assert names[-1] == "no-route"
    assert names.index("kserve-unknown") < names.index("openai-unknown") < names.index("no-route")
    # The router's decisions first: one route per deployment, then any named cluster.
    first = names.index("kserve-unknown")
    picked_names = [n for n in names[:first] if n.startswith("picked")]
    assert picked_names[-1] == "picked" and names.index("picked") < min(
        i for i, n in enumerate(names) if not n.startswith("picked")
    )
    assert {"picked/k1", "picked/c1", "picked/o1"} <= set(picked_names)
    picked = routes[names.index("picked")]
    assert picked["route"]["cluster_header"] == "x-model-router-cluster"
    assert picked["route"]["retry_policy"]["num_retries"] == 2
    k1 = routes[names.index("picked/k1")]
    assert k1["match"]["headers"][0]["string_match"]["exact"] == "deployment.k1"
    assert k1["route"]["cluster"] == "deployment.k1"
    by_name = {r["name"]: r for r in routes}
    native = by_name["native/kserve/k/versions/1"]
    assert native["match"]["path"] == "/v2/models/k/versions/1/infer"
    assert native["route"]["cluster"] == "deployment.k1"
    per_filter = native["typed_per_filter_config"]
    assert per_filter["envoy.filters.http.ext_proc"]["disabled"] is True
    assert per_filter["envoy.filters.http.json_to_metadata"]["disabled"] is True
    fail_open = by_name["fail-open/kserve/k"]
    assert "envoy.filters.http.ext_proc" not in fail_open["typed_per_filter_config"]
    marker = {h["header"]["key"] for h in fail_open["response_headers_to_add"]}
    assert "x-model-router-fail-open" in marker
    # OpenAI model routes leave json_to_metadata on (it reads the body's model there).
    assert "typed_per_filter_config" not in by_name["native/openai/opt"] or (
        "envoy.filters.http.json_to_metadata"
        not in by_name["native/openai/opt"]["typed_per_filter_config"]
    )
    # k's version 2 is disabled: Envoy answers 503 itself for it.
    assert by_name["native/kserve/k/versions/2"]["direct_response"]["status"] == 503
    unknown = by_name["native/kserve/k/versions/unknown"]
    assert unknown["direct_response"]["status"] == 404
    # Envoy's own errors take the path's protocol shape (KServe: {"error": "<message>"}),
    # the type travels in x-model-router-error.
    assert list(json.loads(unknown["direct_response"]["body"]["inline_string"])) == ["error"]
    assert _added(unknown)["x-model-router-error"] == "version_not_found"
    for name, shape in [("kserve-unknown", str), ("openai-unknown", dict), ("no-route", dict)]:
        route = by_name[name]
        assert route["direct_response"]["status"] == 503
        err = json.loads(route["direct_response"]["body"]["inline_string"])["error"]
        assert isinstance(err, shape), (name, err)
        assert _added(route)["x-model-router-error"] == "router_unavailable"
    assert (
        json.loads(by_name["openai-unknown"]["direct_response"]["body"]["inline_string"])["error"][
            "code"
        ]
        == "router_unavailable"
    )
    assert by_name["kserve-unknown"]["match"] == {"path_separated_prefix": "/v2"}
    assert "responses" in by_name["openai-unknown"]["match"]["safe_regex"]["regex"]
    # Only the router handles "chat": no native route for it.
    assert not any(n.startswith("native/openai/chat") for n in names)


def _added(route: dict[str, Any]) -> dict[str, str]:
    return {h["header"]["key"]: h["header"]["value"] for h in route["response_headers_to_add"]}


def test_clusters_walk_the_routers_list_and_check_health() -> None:
    state = state_for(ROUTES)
    assert state.snapshot is not None
    clusters, endpoints = build_clusters(parse_config(ROUTES), state.snapshot)
    k1 = json_format.MessageToDict(clusters["deployment.k1"], preserving_proto_field_name=True)
    policy = k1["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert policy["name"] == "envoy.load_balancing_policies.override_host"
    assert policy["typed_config"]["override_host_sources"] == [
        {"header": "x-gateway-destination-endpoint"}
    ]
    assert k1["health_checks"][0]["http_health_check"]["path"] == "/v2/health/ready"
    g1 = json_format.MessageToDict(clusters["deployment.g1"], preserving_proto_field_name=True)
    assert g1["health_checks"][0]["http_health_check"]["path"] == "/ping"
    c1 = json_format.MessageToDict(clusters["deployment.c1"], preserving_proto_field_name=True)
    assert c1["health_checks"][0]["http_health_check"]["path"] == "/health"
    assert k1["metadata"]["filter_metadata"]["model_router"] == {
        "model": "k", "version": "1", "deployment": "k1",
    }  # fmt: skip
    # A disabled deployment keeps its endpoints: decisions already made finish there.
    assert len(endpoints["deployment.k2"].endpoints[0].lb_endpoints) == 1
    # Stats without dots: Envoy's envoy_cluster_name tag ends at the first dot.
    assert k1["alt_stat_name"] == "deployment_k1"


def test_cluster_stat_names_have_no_dots_and_stay_distinct() -> None:
    names = [cluster_stat_name(d) for d in ("chat.v1", "chat_v1", "chat v1", "chat-sims")]
    assert all("." not in n for n in names)
    assert len(set(names)) == 4
    assert names[3] == "deployment_chat-sims"


def test_consul_endpoints_are_not_actively_checked_by_envoy() -> None:
    text = "registry: {type: consul}\n" + ROUTES
    state = state_for(ROUTES)
    assert state.snapshot is not None
    clusters, _ = build_clusters(parse_config(text), state.snapshot)
    assert not clusters["deployment.k1"].health_checks
    assert clusters["deployment.k1"].HasField("outlier_detection")


def test_timeouts_per_model_first_byte_apart_from_total() -> None:
    """connect (cluster), first byte (per_try_timeout) and total (route timeout): defaults
    from ``envoy``, overridden per model, on every route that reaches the model."""
    text = ROUTES.replace(
        'k: {protocol: kserve_v2, versions: ["1", "2"]}',
        'k: {protocol: kserve_v2, versions: ["1", "2"],'
        " timeouts: {connect_s: 0.5, first_byte_s: 3, total_s: 30}}",
    )
    by_name = {r["name"]: r for r in _routes(text)}
    for name in ("picked/k1", "native/kserve/k/versions/1", "fail-open/kserve/k"):
        action = by_name[name]["route"]
        assert action["timeout"] == "30s", name
        assert action["retry_policy"]["per_try_timeout"] == "3s", name
    chat = by_name["picked/c1"]["route"]
    assert chat["timeout"] == "600s"  # envoy.route_timeout_s
    assert chat["retry_policy"]["per_try_timeout"] == "120s"  # envoy.first_byte_timeout_s
    state = state_for(text)
    assert state.snapshot is not None
    clusters, _ = build_clusters(parse_config(text), state.snapshot)
    assert clusters["deployment.k1"].connect_timeout.ToMilliseconds() == 500
    assert clusters["deployment.c1"].connect_timeout.ToMilliseconds() == 2000
