"""Command line: ``model-router serve | up | demo | explain | check-config``."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import orjson

from extproc.control.compile import CompiledRouting
from extproc.control.errors import ConfigError
from extproc.control.last_good import load_last_good
from extproc.control.reload import check_routing_file, load_routing
from extproc.server import logs

T = TypeVar("T")

GRPC_EXPERIMENTS = "-event_engine_listener,-event_engine_for_all_other_endpoints"

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="Routing file (YAML).",
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where available (a measurable win for gRPC streams)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return asyncio.run(coro)
    return uvloop.run(coro)


def _line(problem: str) -> int:
    head, _, _ = problem.partition(":")
    number = head.removeprefix("line ").split(",")[0]
    return int(number) if head.startswith("line ") and number.isdigit() else 0


def _fail(exc: ConfigError) -> NoReturn:
    """Every problem, in the order of the file's lines, and exit 1."""
    click.echo(f"{exc.source}: invalid routing file", err=True)
    for problem in sorted(exc.problems, key=_line):
        click.echo(f"  {problem}", err=True)
    sys.exit(1)


def _load_or_exit(path: Path, *, resolve: bool = False) -> CompiledRouting:
    """The routing file loaded and compiled (with ``resolve``, its endpoints' hostnames
    resolved too), or every problem printed and exit 1."""
    try:
        return run(check_routing_file(path)) if resolve else load_routing(path)
    except ConfigError as exc:
        _fail(exc)


def _load_or_last_good(path: Path, last_good: Path | None) -> CompiledRouting:
    """The routing file; if it does not load and a last good one is kept, that one
    (logged with why); else every problem printed and exit 1."""
    try:
        return load_routing(path)
    except ConfigError as exc:
        if last_good is None or not last_good.exists():
            _fail(exc)
        try:
            compiled = load_last_good(last_good, path)
        except ConfigError:
            _fail(exc)
        logging.getLogger("extproc.cli").error(
            "routing file %s does not load (%s); starting on the last good one, kept at %s",
            path,
            "; ".join(exc.problems),
            last_good,
        )
        return compiled


@click.group()
@click.version_option(package_name="model-router")
def main() -> None:
    """model-router: an Envoy ext_proc router for inference requests."""


@main.command()
@CONFIG_OPTION
@click.option("--workers", type=int, default=None, help="Worker processes (default: routing file).")
@click.option("--worker-index", type=int, default=None, hidden=True)
@click.option(
    "--last-good",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Keep every accepted routing file here; start on it when the file does not load "
    "(--workers: the supervisor keeps one by default).",
)
@click.option("--log-level", default="info", show_default=True)
def serve(
    config_path: Path,
    workers: int | None,
    worker_index: int | None,
    last_good: Path | None,
    log_level: str,
) -> None:
    """Run the ext_proc gRPC server (N workers on ports port..port+N-1)."""
    # Before grpc is imported (workers inherit it): do socket I/O in grpc.aio's poller
    # thread instead of separate EventEngine threads, one thread hop fewer per message
    # (measured: about a third less router CPU per request at 500 req/s). Set
    # GRPC_EXPERIMENTS yourself to override; re-measure on grpcio upgrades.
    os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
    index = worker_index or 0
    logs.setup(log_level, worker=index)
    compiled = _load_or_last_good(config_path, last_good)
    config = compiled.config
    n = workers or config.listener.workers
    if worker_index is None and n > 1:
        from extproc.ops.supervisor import Supervisor

        sup = Supervisor(
            config_path,
            n,
            grace_s=config.listener.grace_period_s,
            log_level=log_level,
            last_good=last_good,
        )
        sys.exit(run(sup.run()))
    from extproc.server.app import EXIT_PORT_IN_USE, ListenError, Server

    if config.listener.pin_cpu and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[index % len(cpus)]})  # before grpc starts threads
    server = Server(compiled, config_path=config_path, worker=index, last_good=last_good)
    try:
        run(server.serve())
    except ConfigError as exc:  # e.g. an endpoint's hostname that does not resolve
        _fail(exc)
    except ListenError as exc:
        click.echo(f"model-router serve (worker {index}): {exc}", err=True)
        sys.exit(EXIT_PORT_IN_USE)


@main.command("check-config")
@click.argument("path", type=click.Path(path_type=Path))
def check_config(path: Path) -> None:
    """Validate a routing file (and resolve its endpoints' hostnames); print every problem
    with its key path and line."""
    config = _load_or_exit(path, resolve=True).config
    deps = len(config.deployments)
    eps = sum(len(d.endpoints) for d in config.deployments)
    click.echo(f"{path}: ok ({len(config.models)} models, {deps} deployments, {eps} endpoints)")


@main.command()
@CONFIG_OPTION
@click.option("--request", "request_path", type=click.Path(path_type=Path, exists=True))
@click.option("--path", "http_path", default="/v1/chat/completions", show_default=True)
@click.option("--method", default="POST", show_default=True)
@click.option("--header", "headers", multiple=True, help="k=v (repeatable)")
@click.option(
    "--router",
    "router_url",
    default=None,
    help="Ask a running worker (its metrics URL, e.g. http://127.0.0.1:9464): its live "
    "load, latency, in-flight counts and ejections decide.",
)
def explain(
    config_path: Path,
    request_path: Path | None,
    http_path: str,
    method: str,
    headers: tuple[str, ...],
    router_url: str | None,
) -> None:
    """Print the routing decision for one request as JSON."""
    from extproc.ops.explain import explain_live, explain_request

    compiled = _load_or_exit(config_path)
    hdrs: list[tuple[str, str]] = []
    for item in headers:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not k=v", param_hint="--header")
        hdrs.append((key.strip().lower(), value.strip()))
    body = request_path.read_bytes() if request_path else None
    if router_url is not None:
        try:
            result = run(explain_live(router_url, method, http_path, hdrs, body))
        except (OSError, RuntimeError, ValueError) as exc:
            click.echo(f"explain --router {router_url}: {exc}", err=True)
            sys.exit(1)
    else:
        try:
            result = run(explain_request(compiled, method, http_path, hdrs, body))
        except ConfigError as exc:  # e.g. an endpoint's hostname that does not resolve
            _fail(exc)
    click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


@main.command()
@CONFIG_OPTION
@click.option("--workers", type=int, default=None, help="Router workers (default: routing file).")
@click.option("--log-level", default="warning", show_default=True)
def up(config_path: Path, workers: int | None, log_level: str) -> None:
    """Run the router and Envoy together (Envoy config rendered from the shipped template).

    A router that dies is restarted while Envoy keeps running (its failure mode covers
    the gap); Ctrl-C or SIGTERM stops both."""
    from extproc.ops.stack import run_up

    config = _load_or_exit(config_path, resolve=True).config
    if workers is not None:
        if not 1 <= workers <= 64:
            raise click.BadParameter("must be between 1 and 64", param_hint="--workers")
        listener = config.listener.model_copy(update={"workers": workers})
        config = config.model_copy(update={"listener": listener})
    logs.setup(log_level, json=False)
    sys.exit(run(run_up(config, config_path, log_level)))


@main.command()
@click.option(
    "--address",
    default="127.0.0.1:50051",
    show_default=True,
    help="A worker's gRPC host:port.",
)
@click.option(
    "--service",
    type=click.Choice(["readiness", "liveness"]),
    default="readiness",
    show_default=True,
)
@click.option("--timeout", "timeout_s", type=float, default=2.0, show_default=True)
def healthcheck(address: str, service: str, timeout_s: float) -> None:
    """Exit 0 when a router worker's gRPC health reports SERVING, else 1 with the reason
    (for container health checks: no curl or grpc_health_probe needed)."""
    from extproc.ops.procs import grpc_health_once

    status = run(grpc_health_once(address, service, timeout_s))
    if status != "SERVING":
        click.echo(f"model-router at {address}: {service} is not SERVING: {status}", err=True)
        sys.exit(1)


@main.command("envoy-config")
@CONFIG_OPTION
def envoy_config(config_path: Path) -> None:
    """Print the Envoy bootstrap for a routing file (what `up` runs; envoy/envoy.yaml)."""
    from extproc.ops.envoy_config import render_bootstrap
    from extproc.ops.gateway_filters import jwks_path

    config = _load_or_exit(config_path).config
    click.echo(render_bootstrap(config, jwks=jwks_path(config, config_path)), nl=False)


@main.command("new-key")
@click.option("--name", required=True, help="How logs and errors name the key.")
@click.option("--tenant", required=True, help="The tenant the key belongs to.")
def new_api_key(name: str, tenant: str) -> None:
    """Make an API key: prints the key (shown once, never stored) on stderr and the keys
    file entry (its SHA-256 digest) on stdout."""
    import yaml

    from extproc.control.gateway.keys import entry_for, new_key

    key = new_key()
    click.echo(f"API key (give it to the caller; it is not stored anywhere): {key}", err=True)
    click.echo(
        yaml.safe_dump([entry_for(key, name=name, tenant=tenant)], sort_keys=False), nl=False
    )


@main.command()
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=Path("."),
    show_default=True,
    help="The checkout holding docker-compose.yml and deploy/.",
)
@click.option("--log-level", default="info", show_default=True)
def stack(root: Path, log_level: str) -> None:
    """Run docker-compose.yml's topology natively, from the same files: Consul, two
    llm-d-inference-sim replicas, KServe's ModelServer, the router, Envoy and Prometheus on
    loopback (no Grafana: the dashboard is in deploy/grafana). Ctrl-C stops it."""
    from extproc.dev.native_stack import run_native_stack

    if not (root / "docker-compose.yml").is_file():
        click.echo(f"model-router stack: no docker-compose.yml in {root.resolve()}", err=True)
        sys.exit(1)
    logs.setup("warning", json=False)
    sys.exit(run(run_native_stack(root, log_level)))


@main.command()
@click.option("--log-level", default="warning", show_default=True)
@click.option(
    "--registry",
    type=click.Choice(["static", "consul"]),
    default="static",
    show_default=True,
    help="static: the routing file lists deployments; consul: a real local Consul agent.",
)
@click.option(
    "--scenario",
    type=click.Choice(["routing", "load-aware"]),
    default="routing",
    show_default=True,
    help="routing: identification and routing on small model servers; load-aware: "
    "load-aware picks and shedding on llm-d-inference-sim (scripts/install-inference-sim).",
)
def demo(log_level: str, registry: str, scenario: str) -> None:
    """Start model servers, router and Envoy; send requests; print where each landed."""
    logs.setup(log_level, json=False)
    if scenario == "load-aware":
        from extproc.dev.demo_load_aware import run_load_aware_demo

        sys.exit(run(run_load_aware_demo()))
    from extproc.dev.demo import run_demo

    sys.exit(run(run_demo(registry)))
