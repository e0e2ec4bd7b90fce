"""``model-router stack``'s address mapping: compose service names -> loopback ports."""

from __future__ import annotations

import json

import pytest
import yaml

from extproc.dev.native_stack import (
    Addresses,
    native_routes,
    native_services,
    native_targets,
    with_port,
)
from tests.support import ROOT


def where() -> Addresses:
    out = Addresses()
    out.add("sim-a", 8000, 41001)
    out.add("sim-b", 8000, 41002)
    out.add("kserve", 8080, 41003)
    return out


def test_addresses_map_compose_services_and_name_unknown_ones() -> None:
    w = where()
    assert w("sim-a:8000") == "127.0.0.1:41001"
    assert w.url("http://kserve:8080/v2/health/ready") == "http://127.0.0.1:41003/v2/health/ready"
    assert w.port("sim-b:8000") == 41002
    with pytest.raises(ValueError, match=r"router:9464 is not a service the stack runs \(kserve"):
        w("router:9464")


def test_with_port_replaces_both_flag_forms() -> None:
    assert with_port(["--port=8000", "--model=chat"], "--port", 9) == ["--port=9", "--model=chat"]
    assert with_port(["--http-port", "8080", "fraud"], "--http-port", 9) == [
        "--http-port",
        "9",
        "fraud",
    ]


def test_compose_files_rewritten_for_loopback() -> None:
    services = json.loads((ROOT / "deploy/consul/services.json").read_text())
    native = native_services(services, where())
    kserve = next(s for s in native["services"] if s["id"] == "fraud-kserve")
    assert (kserve["address"], kserve["port"]) == ("127.0.0.1", 41003)
    assert kserve["check"]["http"] == "http://127.0.0.1:41003/v2/health/ready"
    assert kserve["meta"] == next(
        s["meta"] for s in services["services"] if s["id"] == "fraud-kserve"
    )

    groups = yaml.safe_load((ROOT / "deploy/prometheus/targets/model-servers.yml").read_text())
    targets = native_targets(groups, where())
    assert [g["targets"] for g in targets] == [
        ["127.0.0.1:41001", "127.0.0.1:41002"],
        ["127.0.0.1:41003"],
    ]
    assert [g["labels"] for g in targets] == [g["labels"] for g in groups]

    routes = yaml.safe_load((ROOT / "deploy/routes.yaml").read_text())
    text = yaml.safe_load(native_routes(routes, 42000, 42100, [42200, 42201, 42202]))
    assert text["listener"]["port"] == 42000 and text["listener"]["metrics_port"] == 42100
    assert text["envoy"]["router_host"] == "localhost"
    assert text["models"] == routes["models"] and text["registry"] == routes["registry"]
