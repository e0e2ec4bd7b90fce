"""Model specs, compiled once, checked per request (422 :class:`SpecViolation`).

:func:`extproc.control.compile.specs.parse_specs` turns the neutral spec form
(``specs.json``) into one :class:`CompiledSpec` per model.
:meth:`CompiledSpec.check` runs after the body decoded (400), was well-formed
for its protocol (400) and named a registered model (404): it raises
:class:`SpecViolation` with the rule broken and the JSON Pointer of the value,
or returns the names of the checks that ran (for ``model-router explain``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fastjsonschema

from extproc.core.errors import SpecViolation, shown
from extproc.core.protocols.json_body import json_pointer
from extproc.core.protocols.openai import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    RESPONSES,
    TEXT_PARTS,
    TOKEN_LIMIT_FIELDS,
    response_messages,
)
from extproc.core.specs.types import KServeSpec, ModelSpec, OpenAISpec, SchemaValidator, TensorSpec

__all__ = ["CompiledSpec", "prompt_chars"]

STRUCTURAL_PARAMS = frozenset({"model", "messages", "prompt", "input"})
"""Always allowed, whatever ``allowed_params`` says: the protocol's own fields."""

_PROMPT_FIELD = {
    CHAT: "/messages",
    COMPLETIONS: "/prompt",
    EMBEDDINGS: "/input",
    RESPONSES: "/input",
}


@dataclass(frozen=True, slots=True)
class CompiledSpec:
    """One model's spec, ready to check requests against."""

    spec: ModelSpec
    validator: SchemaValidator | None = None

    @property
    def model(self) -> str:
        return self.spec.model

    @property
    def protocol(self) -> str:
        return self.spec.protocol

    @property
    def versions(self) -> tuple[str, ...]:
        return self.spec.versions

    def check(self, body: Mapping[str, Any] | None, protocol: str, path: str) -> list[str]:
        """422 :class:`SpecViolation` if ``body`` breaks this spec, else the checks that ran.

        ``protocol`` and ``path`` are the request's (``path`` without the query);
        the body must already be well-formed for the protocol. Generic requests
        have no body spec.
        """
        if protocol == "generic" or self.spec.protocol == "generic":
            return []
        if protocol != self.spec.protocol:
            raise SpecViolation(
                f"model {self.spec.model!r} speaks {self.spec.protocol}, not {protocol}",
                rule="protocol",
            )
        if body is None:
            return []
        if self.spec.openai is not None:
            return _check_openai(self.spec.openai, self.validator, body, path)
        if self.spec.kserve_v2 is not None:
            return _check_kserve(self.spec.kserve_v2, body)
        return []


# --------------------------------------------------------------------------- OpenAI


def _check_openai(
    spec: OpenAISpec, validator: SchemaValidator | None, body: Mapping[str, Any], path: str
) -> list[str]:
    ran: list[str] = []
    if spec.forbidden_params:
        ran.append("forbidden_params")
        for name in spec.forbidden_params:
            if name in body:
                raise SpecViolation(
                    f"parameter {shown(name)} is not allowed for this model",
                    field=json_pointer([name]),
                    rule="forbidden_params",
                )
    if spec.allowed_params is not None:
        ran.append("allowed_params")
        for name in body:
            if name not in spec.allowed_params and name not in STRUCTURAL_PARAMS:
                raise SpecViolation(
                    f"parameter {_short(name)} is not among this model's parameters",
                    field=json_pointer([name]),
                    rule="allowed_params",
                )
    if spec.max_tokens is not None:
        ran.append("max_tokens")
        for name in TOKEN_LIMIT_FIELDS:
            value = body.get(name)
            if isinstance(value, int | float) and value > spec.max_tokens:
                raise SpecViolation(
                    f"{name} {value} is over this model's limit of {spec.max_tokens}",
                    field="/" + name,
                    rule="max_tokens",
                )
    messages = response_messages(body) if path == RESPONSES else body.get("messages")
    if spec.max_messages is not None:
        ran.append("max_messages")
        if isinstance(messages, list) and len(messages) > spec.max_messages:
            raise SpecViolation(
                f"{len(messages)} messages, over this model's limit of {spec.max_messages}",
                field="/input" if path == RESPONSES else "/messages",
                rule="max_messages",
            )
    if spec.max_prompt_chars is not None:
        ran.append("max_prompt_chars")
        chars = prompt_chars(body, path)
        if chars > spec.max_prompt_chars:
            raise SpecViolation(
                f"the prompt has {chars} characters, over this model's "
                f"limit of {spec.max_prompt_chars}",
                field=_PROMPT_FIELD.get(path, _prompt_field(body)),
                rule="max_prompt_chars",
            )
    if validator is not None:
        ran.append("json_schema")
        try:
            validator(body)
        except fastjsonschema.JsonSchemaValueException as exc:
            field = _schema_pointer(exc, body)
            name = exc.name or "data"
            what = exc.message[len(name) :].strip() if exc.message.startswith(name) else exc.message
            raise SpecViolation(
                f"{field or 'the body'} {what} (JSON Schema {exc.rule!r})",
                field=field or None,
                rule="json_schema",
            ) from exc
    return ran


def prompt_chars(body: Mapping[str, Any], path: str) -> int:
    """Prompt characters (Unicode code points) as the corpus README counts them.

    Chat: string ``content`` and the ``text`` of text parts of every message;
    completions: string ``prompt``/``suffix`` values; embeddings: string
    ``input`` values; responses: ``instructions``, a string ``input`` or the
    content of its message items. Token ids, images, tool calls don't count. An
    unknown path counts all of them.
    """
    n = 0
    if path == CHAT or path not in _PROMPT_FIELD:
        n += _message_chars(body.get("messages"))
    if path == RESPONSES:
        n += _strings(body.get("instructions"))
        value = body.get("input")
        n += len(value) if isinstance(value, str) else _message_chars(response_messages(body))
    if path == COMPLETIONS or path not in _PROMPT_FIELD:
        n += _strings(body.get("prompt")) + _strings(body.get("suffix"))
    if path == EMBEDDINGS or path not in _PROMPT_FIELD:
        n += _strings(body.get("input"))
    return n


def _message_chars(messages: object) -> int:
    n = 0
    if not isinstance(messages, list):
        return 0
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        if isinstance(content, str):
            n += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in TEXT_PARTS:
                    text = part.get("text")
                    if isinstance(text, str):
                        n += len(text)
    return n


def _strings(value: object) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(len(v) for v in value if isinstance(v, str))
    return 0


def _prompt_field(body: Mapping[str, Any]) -> str | None:
    for name in ("messages", "prompt", "input"):
        if name in body:
            return "/" + name
    return None


def _schema_pointer(exc: fastjsonschema.JsonSchemaValueException, body: Any) -> str:
    """The JSON Pointer of the value fastjsonschema names as ``data.key[3].other``.

    Keys may themselves contain ``.``, ``[`` or ``]``, so the name is matched
    against the body's real keys rather than split.
    """
    name = exc.name or "data"
    rest = name[4:] if name.startswith("data") else name
    found = _resolve(body, rest, 0)
    if found is not None:
        return json_pointer(found)
    return json_pointer(exc.path[1:])  # best effort


_INDEX = re.compile(r"\[(\d+)\]")


def _resolve(node: Any, rest: str, depth: int) -> list[str | int] | None:
    if not rest:
        return []
    if depth > 64:
        return None
    if isinstance(node, list):
        m = _INDEX.match(rest)
        if m is None or int(m[1]) >= len(node):
            return None
        sub = _resolve(node[int(m[1])], rest[m.end() :], depth + 1)
        return None if sub is None else [int(m[1]), *sub]
    if isinstance(node, dict) and rest[0] == ".":
        for key in sorted((k for k in node if rest.startswith(k, 1)), key=len, reverse=True):
            after = rest[1 + len(key) :]
            if after and after[0] not in ".[":
                continue
            sub = _resolve(node[key], after, depth + 1)
            if sub is not None:
                return [key, *sub]
    return None


def _short(s: str, n: int = 64) -> str:
    return repr(s if len(s) <= n else s[:n] + "...")


# --------------------------------------------------------------------------- KServe v2


def _check_kserve(spec: KServeSpec, body: Mapping[str, Any]) -> list[str]:
    ran: list[str] = []
    if spec.inputs is not None:
        ran += ["tensor_name", "tensor_datatype", "tensor_shape", "required_input"]
        _check_inputs(spec.inputs, body.get("inputs"))
    if spec.outputs is not None:
        ran.append("output_name")
        known_out = {t.name for t in spec.outputs}
        outputs = body.get("outputs")
        for i, tensor in enumerate(outputs if isinstance(outputs, list) else ()):
            name = tensor.get("name") if isinstance(tensor, dict) else None
            if not isinstance(name, str) or name not in known_out:
                known = ", ".join(sorted(known_out)) or "none"
                raise SpecViolation(
                    f"the model has no output {_short(str(name))} (outputs: {known})",
                    field=f"/outputs/{i}/name",
                    rule="output_name",
                )
    return ran


def _check_inputs(spec: tuple[TensorSpec, ...], inputs: object) -> None:
    declared = {t.name: t for t in spec}
    seen: set[str] = set()
    for i, item in enumerate(inputs if isinstance(inputs, list) else ()):
        tensor = item if isinstance(item, dict) else {}
        name = tensor.get("name")
        d = declared.get(name) if isinstance(name, str) else None
        if d is None:
            known = ", ".join(sorted(declared)) or "none"
            raise SpecViolation(
                f"the model has no input {_short(str(name))} (inputs: {known})",
                field=f"/inputs/{i}/name",
                rule="tensor_name",
            )
        seen.add(d.name)
        datatype = tensor.get("datatype")
        if d.datatype is not None and datatype != d.datatype:
            raise SpecViolation(
                f"input {d.name!r} is {d.datatype}, not {_short(str(datatype))}",
                field=f"/inputs/{i}/datatype",
                rule="tensor_datatype",
            )
        shape = tensor.get("shape")
        if d.shape is not None and not _shape_matches(d.shape, shape):
            want = "[" + ",".join(map(str, d.shape)) + "]"
            got = (
                "[" + ",".join(map(str, shape[:8])) + (",..." if len(shape) > 8 else "") + "]"
                if isinstance(shape, list)
                else _short(str(shape))
            )
            raise SpecViolation(
                f"input {d.name!r} must have shape {want} (-1: any size), not {got}",
                field=f"/inputs/{i}/shape",
                rule="tensor_shape",
            )
    missing = [t.name for t in spec if not t.optional and t.name not in seen]
    if missing:
        raise SpecViolation(
            f"input {missing[0]!r} is required",
            field="/inputs",
            rule="required_input",
        )


def _shape_matches(spec: tuple[int, ...], shape: object) -> bool:
    if not isinstance(shape, list) or len(shape) != len(spec):
        return False
    return all(want in (-1, got) for want, got in zip(spec, shape, strict=True))
