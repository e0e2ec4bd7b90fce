"""The compile step: routing-file config (plus a registry snapshot) into the immutable
state the hot path reads.

Two functions, both pure but for reading the spec files a routing file names:

* :func:`compile_routing`: a validated :class:`~extproc.control.schema.Config` into
  compiled specs, content rules and scheduling profiles (:class:`CompiledRouting`);
  every problem in any of them is reported at once as a :class:`ConfigError`. It runs
  once per load or reload.
* :func:`router_state`: a :class:`CompiledRouting` plus one registry snapshot into a
  :class:`~extproc.core.flow.RouterState`. It runs on every snapshot the registry
  publishes, and is cheap: it only wraps what was compiled (profiles keep their
  picker state across snapshots).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from extproc.control.compile.gateway import CompiledGateway, compile_gateway
from extproc.control.compile.rules import compile_rules
from extproc.control.compile.scheduling import compile_scheduler, envoy_blocker
from extproc.control.compile.specs import compile_config_specs
from extproc.control.errors import ConfigError, ProblemsError
from extproc.control.schema import Config
from extproc.core.envoy_wire import ResponseCache
from extproc.core.flow import RouterState
from extproc.core.gateway import CREDENTIAL_HEADERS, Gateway
from extproc.core.gateway.quota import QuotaBook
from extproc.core.rules.ruleset import RuleSet
from extproc.core.scheduling.scheduler import Scheduler
from extproc.core.signals import SignalBoard
from extproc.core.snapshot import Snapshot
from extproc.core.specs.check import CompiledSpec


@dataclass(frozen=True, slots=True)
class CompiledRouting:
    """A routing file compiled for the request path (independent of the registry)."""

    config: Config
    source: str
    specs: Mapping[str, CompiledSpec]
    ruleset: RuleSet
    scheduler: Scheduler
    text: str = ""
    """The routing file's text this was compiled from (kept as the last good one)."""
    last_good: bool = False
    """Compiled from the kept last good text because the routing file did not load."""
    gateway: CompiledGateway | None = None
    """Authentication and tenant quotas (``auth``, ``tenants``, the keys file)."""

    def __repr__(self) -> str:
        return (
            f"CompiledRouting(source={self.source!r}, models={sorted(self.config.models)}, "
            f"specs={sorted(self.specs)}, rules={list(self.ruleset.names)}, {self.scheduler!r})"
        )


def _base_dir(source: str) -> Path:
    return Path(source).parent if source and not source.startswith("<") else Path.cwd()


def compile_routing(config: Config, source: str = "<config>") -> CompiledRouting:
    """Compile ``config``: specs (inline and ``spec_files`` relative to ``source``), rules
    and scheduling profiles; :class:`ConfigError` lists every problem found."""
    problems: list[str] = []
    specs: Mapping[str, CompiledSpec] = {}
    ruleset = RuleSet()
    scheduler: Scheduler | None = None
    try:
        specs = compile_config_specs(config, _base_dir(source))
    except ProblemsError as exc:
        problems.extend(exc.problems)
    try:
        ruleset = compile_rules(list(config.rules), tenant_header=config.tenant_header)
    except ProblemsError as exc:
        problems.extend(exc.problems)
    unknown = sorted(ruleset.target_models() - set(config.models))
    if unknown:
        problems.append(f"rules: route to undeclared model(s) {', '.join(unknown)}")
    try:
        scheduler = compile_scheduler(config)
    except ProblemsError as exc:
        problems.extend(exc.problems)
    if scheduler is not None:
        problems.extend(_native_problems(config, specs, ruleset, scheduler))
    gateway, found = compile_gateway(config, _base_dir(source))
    problems.extend(found)
    if problems or scheduler is None:
        raise ConfigError(source, problems)
    return CompiledRouting(config, source, specs, ruleset, scheduler, gateway=gateway)


def _native_problems(
    config: Config, specs: Mapping[str, CompiledSpec], ruleset: RuleSet, scheduler: Scheduler
) -> list[str]:
    """Problems with ``native: true`` the routing file alone shows (spec, rules, profile)."""
    problems = []
    for name, m in config.models.items():
        if m.native is not True:
            continue
        why = []
        if name in specs and m.protocol != "generic":
            why.append("it has a spec")
        rules = ruleset.may_apply(name, m.protocol)
        if rules:
            why.append(f"content rule(s) {', '.join(rules)} may apply")
        blocker = envoy_blocker(scheduler.profile_for(name))
        if blocker is not None:
            why.append(blocker)
        if m.objective is not None:
            why.append("it has a latency objective (admission)")
        quotas = [
            d.name for d in config.deployments_of(name)
            if d.max_inflight is not None or d.max_inflight_per_endpoint is not None
        ]  # fmt: skip
        if quotas:
            why.append(f"deployment(s) {', '.join(quotas)} have in-flight quotas")
        if why:
            problems.append(f"models.{name}.native: true, but {'; '.join(why)}")
    return problems


def deciders(config: Config) -> int:
    """Router processes that decide independently: this router's workers and its peers."""
    return config.listener.workers + len(config.envoy.routers)


def router_state(
    compiled: CompiledRouting,
    snapshot: Snapshot | None,
    signals: SignalBoard | None = None,
    quotas: QuotaBook | None = None,
) -> RouterState:
    """The state the hot path reads: ``compiled`` with one registry ``snapshot``, the
    worker's live ``signals`` and its ``quotas`` (fresh ones when there are none:
    explain, tests)."""
    limits = compiled.config.limits
    board = signals if signals is not None else SignalBoard()
    gateway = None
    if compiled.gateway is not None:
        book = quotas if quotas is not None else QuotaBook()
        book.configure(compiled.gateway.quotas, deciders(compiled.config))
        gateway = Gateway(
            compiled.gateway.auth,
            book,
            compiled.config.admission.default_completion_tokens,
        )
    return RouterState(
        snapshot=snapshot,
        scheduler=compiled.scheduler,
        specs=compiled.specs,
        ruleset=compiled.ruleset,
        max_body_bytes=limits.max_body_bytes,
        max_json_depth=limits.max_json_depth,
        signals=board,
        responses=ResponseCache(
            worker=board.worker_id, strip=CREDENTIAL_HEADERS if gateway is not None else ()
        ),
        max_request_headers=limits.max_request_headers,
        gateway=gateway,
    )


__all__ = ["CompiledRouting", "compile_routing", "router_state"]
