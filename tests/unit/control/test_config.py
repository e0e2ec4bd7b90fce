from __future__ import annotations

from pathlib import Path

import pytest

from extproc.control.compile import compile_routing
from extproc.control.errors import ConfigError
from extproc.control.loading import load_config, parse_config
from extproc.control.reload import compile_text, load_routing
from extproc.control.schema import FailureMode
from tests.support import ROOT


def problems(text: str) -> list[str]:
    """Every problem loading and compiling ``text`` reports."""
    with pytest.raises(ConfigError) as info:
        compile_text(text, "routes.yaml")
    return info.value.problems


def test_example_routing_file_is_valid() -> None:
    cfg = load_config(ROOT / "examples" / "routes.yaml")
    assert cfg.failure_mode is FailureMode.CLOSED
    assert cfg.limits.max_body_bytes == 4 * 1024 * 1024
    assert {d.model for d in cfg.deployments} == set(cfg.models)


def test_defaults() -> None:
    cfg = parse_config("models: {m: {protocol: openai, versions: ['1']}}")
    assert cfg.listener.port == 50051 and cfg.listener.workers == 1
    assert cfg.worker_ports() == [50051]
    assert cfg.scheduling.picker is None and cfg.scheduling.profile == "default"
    scheduler = compile_routing(cfg).scheduler
    assert scheduler.default.picker.name == "round_robin"
    assert [f.name for f in scheduler.default.filters] == [
        "routable", "version", "capabilities", "subset",
    ]  # fmt: skip


def test_errors_name_key_path_and_line() -> None:
    found = problems(
        "models:\n"
        "  a:\n"
        "    protocol: grpc\n"
        "    versions: ['1']\n"
        "deployments:\n"
        "  - name: d\n"
        "    model: a\n"
        "    version: '1'\n"
        "    endpoints: ['no-port']\n"
    )
    assert "line 3: models.a.protocol: Input should be 'openai', 'kserve_v2' or 'generic'" in found
    assert any(p.startswith("line 9: deployments[0].endpoints: endpoint 'no-port'") for p in found)


def test_unknown_keys_and_pickers_rejected() -> None:
    found = problems("listner: {}\nmodels: {m: {protocol: openai, versions: ['1']}}\n")
    assert "line 1: listner: unknown key; did you mean 'listener'?" in found
    found = problems(
        "scheduling: {picker: magic}\nmodels: {m: {protocol: openai, versions: ['1']}}\n"
    )
    assert any(p.startswith("line 1: scheduling.picker: unknown picker 'magic'") for p in found)


def test_cross_references_checked() -> None:
    found = problems(
        "models: {a: {protocol: openai, versions: ['1']}}\n"
        "deployments:\n"
        "  - {name: d, model: a, version: '2', endpoints: ['127.0.0.1:1']}\n"
        "  - {name: d, model: b, version: '1', endpoints: ['127.0.0.1:2']}\n"
    )
    assert "line 3: deployments[0].version: '2' is not one of model 'a' versions ['1']" in found
    assert "line 4: deployments[1].name: duplicate deployment name 'd'" in found
    assert "line 4: deployments[1].model: 'b' is not declared under models" in found


def test_removed_fail_open_key_says_what_replaced_it() -> None:
    found = problems(
        "models: {a: {protocol: openai, versions: ['1']}}\nfail_open: {chat_model: a}\n"
    )
    assert len(found) == 1 and found[0].startswith("line 2: fail_open: removed;")
    assert "its own model's deployments" in found[0]


def test_a_routing_file_needs_models() -> None:
    # An empty or truncated file must never replace a working one on reload.
    assert problems("") == ["models: declare at least one model"]
    assert problems("listener: {}\n") == ["models: declare at least one model"]


def test_yaml_syntax_and_shape_errors() -> None:
    assert problems("models: [unclosed")[0].startswith("line 1, column 18: not valid YAML")
    assert problems("- a\n- b\n") == ["<root>: the routing file must be a mapping"]


def test_endpoint_forms() -> None:
    cfg = parse_config(
        "models: {a: {protocol: openai, versions: [1]}}\n"
        "deployments:\n"
        "  - {name: d, model: a, version: 1, endpoints: ['[::1]:80', 'model.local:8000']}\n"
    )
    eps = cfg.deployments[0].endpoints
    assert [e.address for e in eps] == ["[::1]:80", "model.local:8000"]
    assert eps[0].is_ip and not eps[1].is_ip
    assert cfg.models["a"].versions == ("1",)


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("/nonexistent/routes.yaml")
    assert "cannot read" in info.value.problems[0]


def test_inline_and_file_specs(tmp_path: Path) -> None:
    (tmp_path / "specs.yaml").write_text(
        "m2:\n  protocol: kserve_v2\n  kserve_v2:\n    inputs: [{name: x, datatype: FP32, shape: [-1, 2]}]\n"
        "unrelated: {protocol: openai}\n"
    )
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "spec_files: [specs.yaml]\n"
        "models:\n"
        "  m1: {protocol: openai, versions: ['1'], spec: {openai: {max_tokens: 10}}}\n"
        "  m2: {protocol: kserve_v2, versions: ['1']}\n"
    )
    specs = load_routing(routes).specs
    assert set(specs) == {"m1", "m2", "unrelated"}  # usable by reference (Consul meta)
    assert specs["m1"].protocol == "openai" and specs["m2"].protocol == "kserve_v2"


def test_spec_errors_name_file_and_key(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "spec_files: [missing.json]\n"
        "models:\n"
        "  m1: {protocol: openai, versions: ['1'], spec: {openai: {max_tokenz: 10}}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_routing(routes)
    found = info.value.problems
    assert any(p.startswith("line 1: spec_files[0]: cannot read") for p in found)
    assert any(
        p.startswith("line 3: models.m1.spec#/m1/openai/max_tokenz: unknown key") for p in found
    )


def test_every_problem_in_one_run_with_its_line(tmp_path: Path) -> None:
    """Five mistakes of four kinds (schema, cross-reference, spec, rule), one run, each
    with its line; the valid rest of the file is still checked."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "listener: {port: 50051, workres: 2}\n"  # 1: unknown key
        "models:\n"
        "  chat: {protocol: openai, versions: ['1'], spec: {openai: {max_tokenz: 5}}}\n"  # 3
        "  img: {protocol: kserve_v2, versions: ['1']}\n"
        "deployments:\n"
        "  - {name: a, model: chta, version: '1', endpoints: ['127.0.0.1:1']}\n"  # 6
        "  - {name: b, model: img, version: '7', endpoints: ['127.0.0.1:2']}\n"  # 7
        "rules:\n"
        "  - {name: r, when: {colour: red}, route: {model: chat}}\n"  # 9
    )
    with pytest.raises(ConfigError) as info:
        load_routing(routes)
    found = info.value.problems
    assert "line 1: listener.workres: unknown key; did you mean 'workers'?" in found
    assert any(p.startswith("line 3: models.chat.spec#/chat/openai/max_tokenz") for p in found)
    assert (
        "line 6: deployments[0].model: 'chta' is not declared under models; did you mean 'chat'?"
        in found
    )
    assert "line 7: deployments[1].version: '7' is not one of model 'img' versions ['1']" in found
    assert any(p.startswith("line 9: rules[0]") and "colour" in p for p in found), found
    assert len(found) == 5, found


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("models:\n  chat: {protocol: openai\n")
    with pytest.raises(ConfigError) as info:
        load_routing(routes)
    assert info.value.source == str(routes)
    assert info.value.problems[0].startswith("line 3, column 1: not valid YAML")
    assert "<unicode string>" not in str(info.value)


def test_did_you_mean_at_every_depth_and_dotted_model_names() -> None:
    found = problems(
        "models:\n"
        "  org.chat/v1:\n"
        "    protocl: openai\n"
        "    versions: ['1']\n"
        "envoy: {listen_prot: 1}\n"
    )
    assert "line 3: models.org.chat/v1.protocl: unknown key; did you mean 'protocol'?" in found
    assert "line 5: envoy.listen_prot: unknown key; did you mean 'listen_port'?" in found


def test_last_good_round_trip(tmp_path: Path) -> None:
    from extproc.control.last_good import load_last_good, save_last_good

    routes = tmp_path / "routes.yaml"
    routes.write_text("models: {m: {protocol: openai, versions: ['1']}}\n")
    kept = tmp_path / "state" / "last-good.yaml"
    save_last_good(kept, load_routing(routes))
    routes.write_text("models: [broken")
    compiled = load_last_good(kept, routes)
    assert set(compiled.config.models) == {"m"} and compiled.source == str(routes)
    with pytest.raises(ConfigError):
        load_last_good(tmp_path / "none.yaml", routes)


def test_kserve_model_names_cannot_end_in_a_reserved_suffix() -> None:
    found = problems(
        "models:\n"
        "  fraud/config: {protocol: kserve_v2, versions: ['1']}\n"
        "  a/versions/2: {protocol: kserve_v2, versions: ['1']}\n"
        "  org/model: {protocol: kserve_v2, versions: ['1']}\n"
        "  llm/generate: {protocol: openai, versions: ['1']}\n"  # not identified by path
    )
    assert len(found) == 2, found
    assert "models.fraud/config: a KServe v2 model name cannot end in '/config'" in found[0]
    assert "read as model 'fraud'" in found[0]
    assert "cannot end in '/versions/2'" in found[1]


def test_workers_listen_on_abstract_unix_sockets_named_by_their_port_by_default() -> None:
    """Same-host Envoy reaches each worker on a Unix socket (measured cheaper than TCP
    loopback); the name follows the worker's TCP port, so the port's exclusivity makes
    the name unique on the host. null keeps TCP only; a folder gives files."""
    listener = parse_config(
        "listener: {port: 6000, workers: 2}\nmodels: {m: {protocol: generic, versions: ['1']}}\n"
    ).listener
    assert [listener.unix_socket(i) for i in (0, 1)] == [
        "@model-router/127.0.0.1-6000.sock", "@model-router/127.0.0.1-6001.sock",
    ]  # fmt: skip
    off = parse_config(
        "listener: {unix_socket_dir: null}\nmodels: {m: {protocol: generic, versions: ['1']}}\n"
    ).listener
    assert off.unix_socket(0) is None
    files = parse_config(
        "listener: {unix_socket_dir: /run/mr/}\nmodels: {m: {protocol: generic, versions: ['1']}}\n"
    ).listener
    assert files.unix_socket(1) == "/run/mr/127.0.0.1-50052.sock"
