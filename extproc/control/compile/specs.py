"""Model specs in their neutral form (``specs.json``): parsing and JSON Schema compilation.

A spec file maps a model name to::

    {"model": name, "protocol": "openai" | "kserve_v2" | "generic", "versions": [...],
     "openai": {"json_schema": {...} | null, "max_messages": n | null,
                "max_prompt_chars": n | null, "max_tokens": n | null,
                "forbidden_params": [...], "allowed_params": [...] | null},
     "kserve_v2": {"inputs": [{"name", "datatype", "shape", "optional"}],
                   "outputs": [{"name", "datatype", "shape"}]}}

Every problem is reported with the JSON Pointer of the offending key
(:class:`SpecError`). ``json_schema`` is Draft 2020-12; it is compiled once with
fastjsonschema, whose draft-07 code generator gives the same results for the
keywords accepted here (see :data:`SCHEMA_KEYWORDS`); any other keyword is
refused rather than silently validated with different semantics.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fastjsonschema
import yaml

from extproc.control.errors import SpecError
from extproc.control.schema import Config
from extproc.core.protocols.json_body import json_pointer
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

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"

SCHEMA_KEYWORDS = frozenset(
    {
        "type", "enum", "const",
        "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
        "maxLength", "minLength", "pattern",
        "items", "maxItems", "minItems", "uniqueItems", "contains",
        "maxProperties", "minProperties", "required", "properties", "patternProperties",
        "additionalProperties", "propertyNames",
        "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
        "$ref", "$defs", "definitions",
    }
)  # fmt: skip
"""Validation keywords whose draft-07 and 2020-12 meanings agree (``items`` only as
one schema; ``$ref`` only local and alone)."""

ANNOTATIONS = frozenset(
    {
        "$schema", "$comment", "title", "description", "default", "examples", "deprecated",
        "readOnly", "writeOnly", "format", "contentEncoding", "contentMediaType",
        "contentSchema",
    }
)  # fmt: skip
"""Keywords 2020-12 treats as annotations; dropped before compiling (fastjsonschema
would otherwise assert ``format``/``content*`` or fill in ``default``)."""

_SCHEMA_TYPES = frozenset({"null", "boolean", "object", "array", "number", "integer", "string"})
_SUBSCHEMA = frozenset({"items", "contains", "additionalProperties", "propertyNames", "not",
                        "if", "then", "else"})  # fmt: skip
_SCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf"})
_SCHEMA_MAP = frozenset({"properties", "patternProperties", "$defs", "definitions"})
_NUMBER = frozenset({"multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum"})
_COUNT = frozenset({"maxLength", "minLength", "maxItems", "minItems", "maxProperties",
                    "minProperties"})  # fmt: skip


class _Problems:
    def __init__(self, where: str) -> None:
        self.where = where
        self.found: list[str] = []

    def add(self, path: list[str | int], what: str) -> None:
        self.found.append(f"{self.where}{json_pointer(path) or '/'}: {what}")


def parse_model_spec(
    raw: object, model: str, *, where: str = ""
) -> tuple[ModelSpec, SchemaValidator | None]:
    """One model's spec and its compiled JSON Schema; :class:`SpecError` if unusable.

    ``where`` prefixes every problem's pointer (e.g. the spec file's name).
    """
    p = _Problems(where)
    spec = _model_spec(raw, model, [model], p)
    validator = None
    if spec is not None and spec.openai is not None and spec.openai.json_schema is not None:
        validator = compile_schema(spec.openai.json_schema, [model, "openai", "json_schema"], p)
    if p.found or spec is None:
        raise SpecError(p.found or [f"{where}/{model}: unusable spec"])
    return spec, validator


def _keys(
    raw: Mapping[str, Any], allowed: frozenset[str], path: list[str | int], p: _Problems
) -> None:
    for key in raw:
        if key not in allowed:
            p.add([*path, key], f"unknown key (expected one of {', '.join(sorted(allowed))})")


def _model_spec(raw: object, model: str, path: list[str | int], p: _Problems) -> ModelSpec | None:
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


def _limit(raw: Mapping[str, Any], key: str, path: list[str | int], p: _Problems) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        p.add([*path, key], "must be a non-negative integer or null")
        return None
    return value


def _names(value: object, path: list[str | int], p: _Problems) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        p.add(path, "must be an array of non-empty strings")
        return ()
    return tuple(value)


def _openai(raw: object, path: list[str | int], p: _Problems) -> OpenAISpec | None:
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


def _kserve(raw: object, path: list[str | int], p: _Problems) -> KServeSpec | None:
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
    raw: object, path: list[str | int], p: _Problems, *, is_input: bool
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


# --------------------------------------------------------------------------- JSON Schema


def compile_schema(
    schema: Mapping[str, Any], path: list[str | int], p: _Problems
) -> SchemaValidator | None:
    """fastjsonschema validator for a Draft 2020-12 ``schema`` (problems added to ``p``)."""
    before = len(p.found)
    uri = schema.get("$schema", SCHEMA_URI)
    if not isinstance(uri, str) or uri.rstrip("#") != SCHEMA_URI:
        p.add([*path, "$schema"], f"must be {SCHEMA_URI!r} (Draft 2020-12)")
    cleaned = _clean(schema, path, p, root=True)
    if len(p.found) > before:
        return None
    try:
        validator: SchemaValidator = fastjsonschema.compile(
            cleaned, handlers={}, use_default=False, use_formats=False
        )
    except Exception as exc:  # fastjsonschema raises several kinds on bad definitions
        p.add(path, f"invalid JSON Schema: {exc}")
        return None
    return validator


def _clean(schema: object, path: list[str | int], p: _Problems, *, root: bool = False) -> Any:
    """``schema`` without annotations, each keyword checked for shape and support."""
    if isinstance(schema, bool):
        return schema
    if not isinstance(schema, Mapping):
        p.add(path, "a schema must be an object or a boolean")
        return {}
    out: dict[str, Any] = {}
    validating = [k for k in schema if k not in ANNOTATIONS and k not in ("$defs", "definitions")]
    for key, value in schema.items():
        at = [*path, key]
        if key in ANNOTATIONS:
            if key == "$schema" and not root:
                p.add(at, "$schema is only allowed at the schema's root")
            continue
        if key not in SCHEMA_KEYWORDS:
            p.add(at, "unsupported or unknown JSON Schema keyword")
        elif key in _SUBSCHEMA:
            if key == "items" and isinstance(value, list):
                p.add(at, "must be one schema (the array form is not Draft 2020-12)")
            else:
                out[key] = _clean(value, at, p)
        elif key in _SCHEMA_LIST:
            if not isinstance(value, list) or not value:
                p.add(at, "must be a non-empty array of schemas")
            else:
                out[key] = [_clean(s, [*at, i], p) for i, s in enumerate(value)]
        elif key in _SCHEMA_MAP:
            if not isinstance(value, Mapping):
                p.add(at, "must be an object of schemas")
            else:
                if key == "patternProperties":
                    for pattern in value:
                        _regex(pattern, [*at, pattern], p)
                out[key] = {k: _clean(s, [*at, k], p) for k, s in value.items()}
        else:
            out[key] = value
            _check_value(key, value, at, p, validating)
    return out


def _check_value(
    key: str, value: Any, at: list[str | int], p: _Problems, siblings: list[str]
) -> None:
    if key in _NUMBER:
        if type(value) not in (int, float) or (key == "multipleOf" and value <= 0):
            p.add(at, "must be a number" + (" > 0" if key == "multipleOf" else ""))
    elif key in _COUNT:
        if type(value) is not int or value < 0:
            p.add(at, "must be a non-negative integer")
    elif key == "type":
        types = value if isinstance(value, list) else [value]
        if not types or not all(isinstance(t, str) and t in _SCHEMA_TYPES for t in types):
            p.add(at, f"must be one of {', '.join(sorted(_SCHEMA_TYPES))} or an array of them")
    elif key == "enum":
        if not isinstance(value, list):
            p.add(at, "must be an array")
    elif key == "required":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            p.add(at, "must be an array of strings")
    elif key == "uniqueItems":
        if not isinstance(value, bool):
            p.add(at, "must be true or false")
    elif key == "pattern":
        _regex(value, at, p)
    elif key == "$ref":
        if not isinstance(value, str) or not value.startswith("#"):
            p.add(at, "only local references ('#/...') are supported")
        elif len(siblings) > 1:
            p.add(at, "a $ref with sibling keywords is not supported (wrap it in allOf)")


def _regex(value: object, at: list[str | int], p: _Problems) -> None:
    if not isinstance(value, str):
        p.add(at, "must be a regular expression string")
        return
    try:
        re.compile(value)
    except re.error as exc:
        p.add(at, f"not a valid regular expression: {exc}")


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
