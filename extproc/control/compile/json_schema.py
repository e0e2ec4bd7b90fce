"""JSON Schema (Draft 2020-12) in model specs, compiled once with fastjsonschema.

fastjsonschema generates draft-07 code, so only keywords whose meaning is the same in
draft-07 and 2020-12 are accepted (:data:`SCHEMA_KEYWORDS`); any other keyword is
refused with its key path rather than silently validated with different semantics.
Annotation keywords are dropped before compiling (fastjsonschema would assert
``format``/``content*`` or fill in ``default``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import fastjsonschema

from extproc.core.protocols.json_body import json_pointer
from extproc.core.specs.types import SchemaValidator

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


class Problems:
    """Problems found while parsing a spec, each prefixed with ``where`` and a JSON Pointer."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.found: list[str] = []

    def add(self, path: list[str | int], what: str) -> None:
        self.found.append(f"{self.where}{json_pointer(path) or '/'}: {what}")


def compile_schema(
    schema: Mapping[str, Any], path: list[str | int], p: Problems
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


def _clean(schema: object, path: list[str | int], p: Problems, *, root: bool = False) -> Any:
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
    key: str, value: Any, at: list[str | int], p: Problems, siblings: list[str]
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


def _regex(value: object, at: list[str | int], p: Problems) -> None:
    if not isinstance(value, str):
        p.add(at, "must be a regular expression string")
        return
    try:
        re.compile(value)
    except re.error as exc:
        p.add(at, f"not a valid regular expression: {exc}")
