from __future__ import annotations

import yaml

from extproc.control.loading import load_config, parse_config
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
    cfg = parse_config(_open_variant())
    doc = yaml.safe_load(render_bootstrap(cfg, EnvoyPorts(1000, 1001, (2000, 2001))))
    ext_proc = _find(doc, "failure_mode_allow")
    assert ext_proc == [True]
    assert _find(doc, "max_request_bytes") == [4 * 1024 * 1024]
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}
    ports = [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in clusters["ext_proc"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert ports == [2000, 2001]
    assert clusters["picked_endpoint"]["type"] == "ORIGINAL_DST"
    fallback = [n for n in clusters if n.startswith("fallback_")]
    assert len(fallback) == 5  # one per model with enabled deployments
    routes = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]["route_config"]["virtual_hosts"][0]["routes"]
    names = [r["name"] for r in routes]
    assert names[0] == "picked" and names[-1] == "no_route"
    assert "fallback_path_resnet50" in names and "fallback_header_chat-small" in names
    assert "fallback_default_/v1/chat/completions" in names
    early = _find(doc, "early_header_mutation_extensions")[0]
    removed = {m["remove"] for m in early[0]["typed_config"]["mutations"]}  # type: ignore[index]
    assert removed == {
        "x-gateway-destination-endpoint", "x-model-router-model",
        "x-model-router-version", "x-model-router-deployment",
    }  # fmt: skip


def test_fail_closed_has_no_fallback_routes() -> None:
    cfg = load_config(ROOT / "examples" / "routes.yaml")
    doc = yaml.safe_load(render_bootstrap(cfg))
    clusters = [c["name"] for c in doc["static_resources"]["clusters"]]
    assert clusters == ["ext_proc", "picked_endpoint"]
    assert _find(doc, "failure_mode_allow") == [False]


def test_envoy_config_command_prints_the_shipped_file() -> None:
    from click.testing import CliRunner

    from extproc.cli import main

    r = CliRunner().invoke(
        main, ["envoy-config", "--config", str(ROOT / "examples" / "routes.yaml")]
    )
    assert r.exit_code == 0
    assert r.output == (ROOT / "envoy" / "envoy.yaml").read_text()
