"""Model specs in their neutral form (``specs.json``): parsing and JSON Schema compilation.

A spec file maps a model name to::

    {"model": name, "protocol": "openai" | "kserve_v2" | "generic", "versions": [...],
     "openai": {"json_schema": {...} | null, "max_messages": n | null,
                "max_prompt_chars": n | null, "max_tokens": n | null,
                "forbidden_params": [...], "allowed_params": [...] | null},
     "kserve_v2": {"inputs": [{"name", "datatype", "shape", "optional"}],
                   "outputs": [{"name", "datatype", "shape"}]}}

Every problem is reported with the JSON Pointer of the offending key
(:class:`SpecError`). ``json_schema`` is Draft 2020-12, compiled once
(:mod:`extproc.control.compile.json_schema`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from extproc.control.compile.json_schema import Problems, compile_schema
from extproc.control.errors import SpecError
from extproc.control.schema import Config
from extproc.core.protocols.kserve_v2 import DATATYPES
from extproc.core.request import PROTOCOLS
from extproc.core.specs.check import CompiledSpec
from extproc.core.specs.types import (
    KServeSpec,
    ModelSpec,
    OpenAISpec,
    SchemaValidator,
    TensorSpec,
)


def parse_model_spec(
    raw: object, model: str, *, where: str = ""
) -> tuple[ModelSpec, SchemaValidator | None]:
    """One model's spec and its compiled JSON Schema; :class:`SpecError` if unusable.

    ``where`` prefixes every problem's pointer (e.g. the spec file's name).
    """
    p = Problems(where)
    spec = _model_spec(raw, model, [model], p)
    validator = None
    if spec is not None and spec.openai is not None and spec.openai.json_schema is not None:
        validator = compile_schema(spec.openai.json_schema, [model, "openai", "json_schema"], p)
    if p.found or spec is None:
        raise SpecError(p.found or [f"{where}/{model}: unusable spec"])
    return spec, validator


def _keys(
    raw: Mapping[str, Any], allowed: frozenset[str], path: list[str | int], p: Problems
) -> None:
    for key in raw:
        if key not in allowed:
            p.add([*path, key], f"unknown key (expected one of {', '.join(sorted(allowed))})")


def _model_spec(raw: object, model: str, path: list[str | int], p: Problems) -> ModelSpec | None:
    if not isinstance(raw, Mapping):
        p.add(path, "must be an object")
        return None
    _keys(raw, frozenset({"model", "protocol", "versions", "openai", "kserve_v2"}), path, p)
    name = raw.get("model", model)
    if name != model:
        p.add([*path, "model"], f"must equal the spec's key {model!r}")
    protocol = raw.get("protocol")
    if protocol not in PROTOCOLS:
        p.add([*path, "protocol"], f"must be one of {', '.join(PROTOCOLS)}")
        return None
    versions = raw.get("versions", [])
    if not isinstance(versions, list) or not all(isinstance(v, str) and v for v in versions):
        p.add([*path, "versions"], "must be an array of non-empty strings")
        versions = []
    for section in ("openai", "kserve_v2"):
        if section in raw and section != protocol:
            p.add([*path, section], f"does not apply to a {protocol} model")
    openai = kserve = None
    if protocol == "openai":
        openai = _openai(raw.get("openai", {}), [*path, "openai"], p)
    elif protocol == "kserve_v2":
        kserve = _kserve(raw.get("kserve_v2", {}), [*path, "kserve_v2"], p)
    return ModelSpec(model, protocol, tuple(versions), openai, kserve)


def _limit(raw: Mapping[str, Any], key: str, path: list[str | int], p: Problems) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        p.add([*path, key], "must be a non-negative integer or null")
        return None
    return value


def _names(value: object, path: list[str | int], p: Problems) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        p.add(path, "must be an array of non-empty strings")
        return ()
    return tuple(value)


def _openai(raw: object, path: list[str | int], p: Problems) -> OpenAISpec | None:
    if not isinstance(raw, Mapping):
        p.add(path, "must be an object")
        return None
    keys = {"json_schema", "max_messages", "max_prompt_chars", "max_tokens",
            "forbidden_params", "allowed_params"}  # fmt: skip
    _keys(raw, frozenset(keys), path, p)
    schema = raw.get("json_schema")
    if schema is not None and not isinstance(schema, Mapping):
        p.add([*path, "json_schema"], "must be a JSON Schema object or null")
        schema = None
    forbidden = _names(raw.get("forbidden_params", []), [*path, "forbidden_params"], p)
    allowed_raw = raw.get("allowed_params")
    allowed = None
    if allowed_raw is not None:
        allowed = frozenset(_names(allowed_raw, [*path, "allowed_params"], p))
        both = sorted(allowed & set(forbidden))
        if both:
            p.add([*path, "allowed_params"], f"also forbidden: {', '.join(both)}")
    return OpenAISpec(
        json_schema=schema,
        max_messages=_limit(raw, "max_messages", path, p),
        max_prompt_chars=_limit(raw, "max_prompt_chars", path, p),
        max_tokens=_limit(raw, "max_tokens", path, p),
        forbidden_params=forbidden,
        allowed_params=allowed,
    )


def _kserve(raw: object, path: list[str | int], p: Problems) -> KServeSpec | None:
    if not isinstance(raw, Mapping):
        p.add(path, "must be an object")
        return None
    _keys(raw, frozenset({"inputs", "outputs"}), path, p)
    inputs, outputs = raw.get("inputs"), raw.get("outputs")
    return KServeSpec(
        inputs=None if inputs is None else _tensors(inputs, [*path, "inputs"], p, is_input=True),
        outputs=(
            None if outputs is None else _tensors(outputs, [*path, "outputs"], p, is_input=False)
        ),
    )


def _tensors(
    raw: object, path: list[str | int], p: Problems, *, is_input: bool
) -> tuple[TensorSpec, ...]:
    if not isinstance(raw, list):
        p.add(path, "must be an array of tensors")
        return ()
    out: list[TensorSpec] = []
    seen: set[str] = set()
    allowed = frozenset({"name", "datatype", "shape", *(("optional",) if is_input else ())})
    for i, t in enumerate(raw):
        at: list[str | int] = [*path, i]
        if not isinstance(t, Mapping):
            p.add(at, "must be an object")
            continue
        _keys(t, allowed, at, p)
        name = t.get("name")
        if not isinstance(name, str) or not name:
            p.add([*at, "name"], "must be a non-empty string")
            continue
        if name in seen:
            p.add([*at, "name"], f"tensor {name!r} is declared twice")
        seen.add(name)
        datatype = t.get("datatype")
        if is_input and datatype is None:
            p.add([*at, "datatype"], "is required for an input")
        elif datatype is not None and (not isinstance(datatype, str) or datatype not in DATATYPES):
            p.add([*at, "datatype"], f"must be one of {', '.join(sorted(DATATYPES))}")
        shape = t.get("shape")
        if is_input and shape is None:
            p.add([*at, "shape"], "is required for an input")
        elif shape is not None and (
            not isinstance(shape, list) or not all(type(d) is int and d >= -1 for d in shape)
        ):
            p.add([*at, "shape"], "must be an array of sizes (-1 for any size)")
            shape = None
        optional = t.get("optional", False)
        if not isinstance(optional, bool):
            p.add([*at, "optional"], "must be true or false")
            optional = False
        out.append(TensorSpec(name, datatype, None if shape is None else tuple(shape), optional))
    return tuple(out)


def compile_spec(raw: object, model: str, *, where: str = "") -> CompiledSpec:
    """One model's spec (the value under its name in ``specs.json``); :class:`SpecError`."""
    spec, validator = parse_model_spec(raw, model, where=where)
    return CompiledSpec(spec, validator)


def parse_specs(raw: Mapping[str, Any], *, where: str = "") -> dict[str, CompiledSpec]:
    """Every model's :class:`CompiledSpec`; :class:`SpecError` (a ``ValueError``)
    listing each problem as ``<where><JSON Pointer>: what``."""
    if not isinstance(raw, Mapping):
        raise SpecError([f"{where}/: specs must be an object of model name to spec"])
    out: dict[str, CompiledSpec] = {}
    problems: list[str] = []
    for model, spec in raw.items():
        if not isinstance(model, str) or not model:
            problems.append(f"{where}/: model names must be non-empty strings")
            continue
        try:
            out[model] = compile_spec(spec, model, where=where)
        except SpecError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
    return out


def compile_config_specs(config: Config, base: Path) -> dict[str, CompiledSpec]:
    """The routing file's inline specs and its ``spec_files`` (read relative to ``base``),
    compiled once; :class:`SpecError` names every problem's file and key."""
    raw: dict[str, Any] = {}
    where: dict[str, str] = {}
    problems: list[str] = []
    for i, name in enumerate(config.spec_files):
        path = base / name
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            problems.append(f"spec_files[{i}]: cannot read {path}: {exc}")
            continue
        if not isinstance(data, dict):
            problems.append(f"spec_files[{i}]: {path} must map model names to specs")
            continue
        for model, spec in data.items():
            # Specs of models this file does not declare stay usable by reference
            # (Consul ServiceMeta ``spec``).
            raw[model], where[model] = spec, f"{name}#"
    for model, m in config.models.items():
        if m.spec is not None:
            if model in raw:
                problems.append(f"models.{model}.spec: also given in {where[model]}")
            raw[model] = {"protocol": m.protocol, "versions": list(m.versions), **m.spec}
            where[model] = f"models.{model}.spec#"
    specs: dict[str, CompiledSpec] = {}
    for model, spec in raw.items():
        try:
            specs.update(parse_specs({model: spec}, where=where[model]))
        except SpecError as exc:
            problems.extend(exc.problems)
            continue
        declared = config.models[model].protocol if model in config.models else None
        if declared is not None and specs[model].protocol != declared:
            problems.append(f"{where[model]}/{model}/protocol: is not the model's {declared!r}")
    if problems:
        raise SpecError(problems)
    return specs
