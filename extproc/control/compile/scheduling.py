"""The routing file's ``scheduling:`` compiled into profiles of scheduling plugins.

Plugin names are looked up in :mod:`extproc.core.scheduling.plugins`; each plugin's
``params`` are validated against its ``Params`` dataclass (unknown keys and wrong
types are errors naming their key path). Every problem is reported at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, get_type_hints

from pydantic import ConfigDict, ValidationError, create_model

from extproc.control.compile.admission import compile_admission
from extproc.control.errors import ProblemsError
from extproc.control.schema import DEFAULT_FILTERS, Config, PluginRef, ProfileConfig, ScorerRef
from extproc.core.scheduling.framework import Filter, Picker, Plugin, Scorer
from extproc.core.scheduling.plugins import by_kind
from extproc.core.scheduling.profile import Profile, WeightedScorer
from extproc.core.scheduling.scheduler import Scheduler

REQUIRED_FILTERS = ("routable", "version", "capabilities")
"""Filters every profile keeps: without them a request could reach a disabled
deployment, another version than it asked for, or one lacking a capability it needs."""


class SchedulingError(ProblemsError):
    """Invalid profiles or plugin parameters."""


def _plugin(ref: PluginRef, kind: str, at: str, problems: list[str]) -> Plugin | None:
    known = by_kind(kind)
    cls = known.get(ref.type)
    if cls is None:
        problems.append(f"{at}: unknown {kind} {ref.type!r}; known: {', '.join(sorted(known))}")
        return None
    params = _params(cls, dict(ref.params), f"{at}.params", problems)
    return None if params is None else cls(params)


def _params(cls: type[Plugin], raw: dict[str, Any], at: str, problems: list[str]) -> Any:
    """``raw`` validated against the plugin's ``Params`` dataclass: known keys only, each
    of its declared type (strictly: no "3" for 3), defaults for the rest."""
    hints = get_type_hints(cls.Params)
    fields = {f.name: f for f in dataclasses.fields(cls.Params)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        allowed = ", ".join(sorted(fields)) or "none"
        problems.append(f"{at}: unknown parameter(s) {', '.join(unknown)} (allowed: {allowed})")
        return None
    model = create_model(  # type: ignore[call-overload]
        f"{cls.__name__}Params",
        __config__=ConfigDict(extra="forbid", strict=True),
        **{name: (hints[name], f.default) for name, f in fields.items()},
    )
    try:
        values = model.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            where = ".".join(str(p) for p in err["loc"])
            problems.append(f"{at}.{where}: {err['msg']}" if where else f"{at}: {err['msg']}")
        return None
    return cls.Params(**{name: getattr(values, name) for name in fields})


def _profile(
    name: str, cfg: ProfileConfig, default_fallbacks: int, at: str, problems: list[str]
) -> Profile | None:
    before = len(problems)
    filters = [
        _plugin(r, "filter", f"{at}.filters[{i}]", problems) for i, r in enumerate(cfg.filters)
    ]
    names = [r.type for r in cfg.filters]
    missing = [f for f in REQUIRED_FILTERS if f not in names]
    if missing:
        problems.append(f"{at}.filters: every profile needs {', '.join(missing)}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"{at}.filters: listed twice: {', '.join(dupes)}")
    scorers = [
        (_plugin(r, "scorer", f"{at}.scorers[{i}]", problems), r.weight)
        for i, r in enumerate(cfg.scorers)
    ]
    picker = _plugin(cfg.picker, "picker", f"{at}.picker", problems)
    if len(problems) > before or not isinstance(picker, Picker):
        return None
    fallbacks = default_fallbacks if cfg.max_fallbacks is None else cfg.max_fallbacks
    return Profile(
        name,
        tuple(f for f in filters if isinstance(f, Filter)),
        tuple(WeightedScorer(s, w) for s, w in scorers if isinstance(s, Scorer)),
        picker,
        fallbacks,
    )


def _scorers(*pairs: tuple[str, float]) -> tuple[ScorerRef, ...]:
    return tuple(ScorerRef(type=name, weight=weight) for name, weight in pairs)


def _filters(*extra: str) -> tuple[PluginRef, ...]:
    return tuple(PluginRef(type=f) for f in (*DEFAULT_FILTERS, *extra))


_LOAD_AWARE_SCORERS = (
    ("least_busy_time", 2),
    ("queue", 1),
    ("kv_cache", 1),
    ("prefix_cache", 3),
    ("latency", 1),
)

BUILTIN_PROFILES: Mapping[str, ProfileConfig] = {
    # The Gateway API Inference Extension / llm-d endpoint picker's default profile.
    "gie-default": ProfileConfig(
        scorers=_scorers(("queue", 2), ("kv_cache", 2), ("prefix_cache", 3)),
        picker=PluginRef(type="max_score"),
    ),
    "least-inflight": ProfileConfig(
        scorers=_scorers(("least_inflight", 1)), picker=PluginRef(type="max_score")
    ),
    # Ours: the router's own fresh in-flight counts weighted by each endpoint's observed
    # request time (busy time), prefix affinity, the scraped queue and KV cache, observed
    # time to first byte; failing endpoints left out.
    "load-aware": ProfileConfig(
        filters=_filters("not_ejected", "not_saturated"),
        scorers=_scorers(*_LOAD_AWARE_SCORERS),
        picker=PluginRef(type="max_score"),
    ),
    # load-aware, but the cheapest deployment first: the cost weight outweighs every
    # load scorer together, so load only orders endpoints of equally cheap deployments;
    # admission (quotas, latency budgets) decides when the cheap one is not an option.
    "cost-aware": ProfileConfig(
        filters=_filters("not_ejected", "not_saturated"),
        scorers=_scorers(("cost", 10), *_LOAD_AWARE_SCORERS),
        picker=PluginRef(type="max_score"),
    ),
}
"""Profiles every routing file can name without declaring them (a declared profile of
the same name replaces the built-in one)."""


def compile_scheduler(config: Config) -> Scheduler:
    """Profiles (the built-in ``default``, the named ones, per-model shorthands) and
    which model uses which; :class:`SchedulingError` lists every problem."""
    s = config.scheduling
    problems: list[str] = []
    specs: dict[str, tuple[ProfileConfig, str]] = {}
    if "default" not in s.profiles:
        default_picker = s.picker or PluginRef(type="round_robin")
        specs["default"] = (ProfileConfig(picker=default_picker), "scheduling")
    elif s.picker is not None:
        problems.append(
            "scheduling.picker: profiles.default is declared; set its picker there instead"
        )
    for name, cfg in BUILTIN_PROFILES.items():
        specs[name] = (cfg, f"built-in profile {name}")
    for name, cfg in s.profiles.items():
        specs[name] = (cfg, f"scheduling.profiles.{name}")
    by_model: dict[str, str] = {}
    for model, m in config.models.items():
        ms = m.scheduling
        if ms is None:
            continue
        if ms.profile is not None:
            by_model[model] = ms.profile
        elif ms.picker is not None or ms.max_fallbacks is not None:
            # Shorthand: the default filters with this model's picker and fallbacks.
            base = specs.get("default", (ProfileConfig(), ""))[0]
            name = f"model:{model}"
            picker = ms.picker or base.picker
            fallbacks = ms.max_fallbacks if ms.max_fallbacks is not None else base.max_fallbacks
            cfg = ProfileConfig(filters=base.filters, scorers=base.scorers, picker=picker,
                                max_fallbacks=fallbacks)  # fmt: skip
            specs[name] = (cfg, f"models.{model}.scheduling")
            by_model[model] = name
    known = ", ".join(sorted(specs))
    if s.profile not in specs:
        problems.append(f"scheduling.profile: {s.profile!r} is not a profile (known: {known})")
    for model, name in by_model.items():
        if name not in specs:
            problems.append(
                f"models.{model}.scheduling.profile: {name!r} is not a profile (known: {known})"
            )
    profiles: dict[str, Profile] = {}
    for name, (cfg, at) in specs.items():
        profile = _profile(name, cfg, s.max_fallbacks, at, problems)
        if profile is not None:
            profiles[name] = profile
    if problems:
        raise SchedulingError(problems)
    return Scheduler(
        profiles,
        s.profile,
        by_model,
        admission=compile_admission(config),
        default_completion_tokens=config.admission.default_completion_tokens,
    )


NATIVE_PICKERS = frozenset({"round_robin", "weighted_random"})
"""Pickers Envoy has an equivalent of (round robin, weighted round robin)."""


def envoy_blocker(profile: Profile) -> str | None:
    """Why Envoy cannot apply ``profile`` itself (native routing), or ``None``."""
    if profile.scorers:
        return f"profile {profile.name!r} has scorers, which only the router runs"
    if profile.picker.name not in NATIVE_PICKERS:
        return f"profile {profile.name!r} picks with {profile.picker.name}, which Envoy lacks"
    extra = [f.name for f in profile.filters if f.name not in DEFAULT_FILTERS]
    if extra:
        return f"profile {profile.name!r} has filter(s) {', '.join(extra)}"
    return None


__all__ = [
    "DEFAULT_FILTERS",
    "NATIVE_PICKERS",
    "REQUIRED_FILTERS",
    "SchedulingError",
    "compile_scheduler",
    "envoy_blocker",
]
