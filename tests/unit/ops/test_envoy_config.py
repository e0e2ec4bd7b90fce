from __future__ import annotations

import yaml

from extproc.control.loading import load_config, parse_config
from extproc.core.envoy_wire import ROUTING_HEADERS
from extproc.ops.envoy_config import EnvoyPorts, render_bootstrap
from tests.support import ROOT


def _open_variant() -> str:
    text = (ROOT / "examples" / "routes.yaml").read_text()
    return text.replace("failure_mode: closed ", "failure_mode: open   ", 1)


def test_shipped_envoy_configs_are_the_template_rendered() -> None:
    """envoy/*.yaml never drift from what `model-router up` renders."""
    cfg = load_config(ROOT / "examples" / "routes.yaml")
    assert (ROOT / "envoy" / "envoy.yaml").read_text() == render_bootstrap(cfg)
    open_cfg = parse_config(_open_variant())
    assert (ROOT / "envoy" / "envoy.fail-open.yaml").read_text() == render_bootstrap(open_cfg)


def _find(obj: object, key: str) -> list[object]:
    out: list[object] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                out.append(v)
            out.extend(_find(v, key))
    elif isinstance(obj, list):
        for v in obj:
            out.extend(_find(v, key))
    return out


def test_rendering_follows_the_routing_file() -> None:
    cfg = parse_config(_open_variant().replace("envoy:", "envoy:\n  routers: ['10.0.0.9:7000']", 1))
    doc = yaml.safe_load(render_bootstrap(cfg, EnvoyPorts(1000, 1001, (2000, 2001))))
    assert _find(doc, "failure_mode_allow") == [True]
    assert _find(doc, "max_request_bytes") == [4 * 1024 * 1024]
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}
    # Deployments come over CDS; one access-log cluster per router worker it may use.
    assert set(clusters) == {"ext_proc", "xds", "access_log_0", "access_log_1", "access_log_2"}
    loggers = [a for a in _find(doc, "access_log")[0] if a["name"].endswith("http_grpc")]
    assert [a["filter"]["header_filter"]["header"]["string_match"]["exact"] for a in loggers] == [
        "127.0.0.1:2000", "127.0.0.1:2001", "10.0.0.9:7000",
    ]  # fmt: skip
    for name in ("ext_proc", "xds"):  # every worker on its Unix socket, then the other routers
        addresses = [e["endpoint"]["address"]
                     for e in clusters[name]["load_assignment"]["endpoints"][0]["lb_endpoints"]]  # fmt: skip
        assert addresses == [
            {"pipe": {"path": "@model-router/127.0.0.1-2000.sock"}},
            {"pipe": {"path": "@model-router/127.0.0.1-2001.sock"}},
            {"socket_address": {"address": "10.0.0.9", "port_value": 7000}},
        ]
    tcp = yaml.safe_load(
        render_bootstrap(cfg, EnvoyPorts(1000, 1001, (2000, 2001), unix_sockets=False))
    )
    tcp_clusters = {c["name"]: c for c in tcp["static_resources"]["clusters"]}
    assert [e["endpoint"]["address"]["socket_address"]["port_value"]
            for e in tcp_clusters["ext_proc"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
            ] == [2000, 2001, 7000]  # fmt: skip
    ads = doc["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]
    assert ads["cluster_name"] == "xds"
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    rds = hcm["typed_config"]["rds"]
    assert rds["route_config_name"] == "model_router" and rds["config_source"]["ads"] == {}
    filters = [f["name"] for f in hcm["typed_config"]["http_filters"]]
    assert filters.index("envoy.filters.http.json_to_metadata") < filters.index(
        "envoy.filters.http.ext_proc"
    )  # ext_proc's per-route switch must see the route json_to_metadata picked
    early = _find(doc, "early_header_mutation_extensions")[0]
    removed = {m["remove"] for m in early[0]["typed_config"]["mutations"]}  # type: ignore[index]
    assert removed == set(ROUTING_HEADERS)
    assert "x-model-router-cluster" in removed


def test_fail_closed_bootstrap() -> None:
    cfg = load_config(ROOT / "examples" / "routes.yaml")
    doc = yaml.safe_load(render_bootstrap(cfg))
    assert _find(doc, "failure_mode_allow") == [False]
    assert doc["node"]["id"] == "envoy-127.0.0.1-10000"


def test_envoy_config_command_prints_the_shipped_file() -> None:
    from click.testing import CliRunner

    from extproc.cli import main

    r = CliRunner().invoke(
        main, ["envoy-config", "--config", str(ROOT / "examples" / "routes.yaml")]
    )
    assert r.exit_code == 0
    assert r.output == (ROOT / "envoy" / "envoy.yaml").read_text()


def test_local_replies_take_each_paths_protocol_shape() -> None:
    """Envoy's own replies: one mapper per kind and protocol, bodies from error_shapes,
    every one adding x-model-router-error; the OpenAI path filter is the router's."""
    from extproc.core.error_shapes import error_document
    from extproc.core.protocols.openai import PATHS_REGEX
    from extproc.ops.local_replies import local_replies

    cfg = load_config(ROOT / "examples" / "routes.yaml")
    doc = yaml.safe_load(render_bootstrap(cfg))
    [mappers] = _find(doc, "mappers")
    kinds = local_replies(cfg.limits.max_body_bytes)
    assert isinstance(mappers, list) and len(mappers) == 1 + 3 * len(kinds)
    keep = mappers[0]
    assert "model_router_" in keep["filter"]["extension_filter"]["typed_config"]["expression"]
    for i, kind in enumerate(kinds):
        for j, protocol in enumerate(("openai", "kserve_v2", "generic")):
            m = mappers[1 + 3 * i + j]
            body = error_document(protocol, status=kind.status, type=kind.type,
                                  message=kind.message)  # fmt: skip
            assert m["body_format_override"]["json_format"] == body
            assert m["headers_to_add"][0]["header"] == {
                "key": "x-model-router-error", "value": kind.type,
            }  # fmt: skip
            expressions = [str(e) for e in _find(m["filter"], "expression")]
            if protocol == "openai":
                assert f"request.url_path.matches('{PATHS_REGEX}')" in expressions
            elif protocol == "kserve_v2":
                assert any("startsWith('/v2/')" in e for e in expressions)
            else:
                assert "and_filter" not in m["filter"]


def test_router_reached_by_name_and_a_stats_listener() -> None:
    """In a container the router listens on 0.0.0.0 and Envoy reaches it by its service
    name: its clusters resolve the name (STRICT_DNS), while the access loggers still
    match the worker ids the router tags its decisions with (its own listen address)."""
    cfg = parse_config(
        "listener: {host: 0.0.0.0, port: 50051, workers: 2}\n"
        "envoy: {listen_host: 0.0.0.0, stats_port: 9902, router_host: router}\n"
        "models: {m: {protocol: generic, versions: ['1']}}\n"
    )
    doc = yaml.safe_load(render_bootstrap(cfg))
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}
    for name in ("ext_proc", "xds", "access_log_0", "access_log_1"):
        assert clusters[name]["type"] == "STRICT_DNS"
        assert clusters[name]["dns_lookup_family"] == "V4_PREFERRED"
        hosts = {
            e["endpoint"]["address"]["socket_address"]["address"]
            for e in clusters[name]["load_assignment"]["endpoints"][0]["lb_endpoints"]
        }
        assert hosts == {"router"}
    loggers = [a for a in _find(doc, "access_log")[0] if a["name"].endswith("http_grpc")]
    assert [a["filter"]["header_filter"]["header"]["string_match"]["exact"] for a in loggers] == [
        "0.0.0.0:50051", "0.0.0.0:50052",
    ]  # fmt: skip
    listeners = {x["name"]: x for x in doc["static_resources"]["listeners"]}
    stats = listeners["model_router_stats"]
    assert stats["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 9902}
    routes = _find(stats, "routes")[0]
    assert [(r["match"]["path"], r["route"]["cluster"]) for r in routes] == [
        ("/stats/prometheus", "envoy_admin"), ("/ready", "envoy_admin"),
    ]  # fmt: skip
    admin = clusters["envoy_admin"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert admin["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 9901,
    }  # fmt: skip  (admin itself stays on loopback)
    assert doc["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_router_host_is_a_host_without_port() -> None:
    import pytest

    from extproc.control.errors import ConfigError

    with pytest.raises(ConfigError, match="router_host"):
        parse_config("envoy: {router_host: 'router:50051'}\nmodels: {}\n")
