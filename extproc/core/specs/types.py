"""Model specs as the hot path reads them: plain frozen data, parsed and compiled by
:mod:`extproc.control.compile.specs`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SchemaValidator = Callable[[Any], Any]
"""A compiled JSON Schema: returns the value, or raises ``JsonSchemaValueException``."""


@dataclass(frozen=True, slots=True)
class OpenAISpec:
    json_schema: Mapping[str, Any] | None = None
    max_messages: int | None = None
    max_prompt_chars: int | None = None
    max_tokens: int | None = None
    forbidden_params: tuple[str, ...] = ()
    allowed_params: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str | None
    shape: tuple[int, ...] | None
    optional: bool = False


@dataclass(frozen=True, slots=True)
class KServeSpec:
    inputs: tuple[TensorSpec, ...] | None
    """``None``: not declared, any inputs pass."""
    outputs: tuple[TensorSpec, ...] | None
    """``None``: not declared, any requested outputs pass."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    model: str
    protocol: str
    versions: tuple[str, ...]
    openai: OpenAISpec | None
    kserve_v2: KServeSpec | None
