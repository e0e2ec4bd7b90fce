"""Loading the routing file: YAML into a validated :class:`~extproc.control.schema.Config`.

Every problem is reported in one run, each with its line and the path of its key:
YAML syntax (with the file's name, line and column), the schema (with "did you mean"
for unknown keys), and cross-references (undeclared models, versions, duplicate names,
profiles), which are checked on the document itself, so a schema error elsewhere does
not hide them. :func:`parse_document` also returns the part of the file that is valid,
so the compile step (specs, rules, scheduling profiles) can report its problems in the
same run (:func:`extproc.control.reload.load_routing`). A ``Config`` is plain data;
:func:`extproc.control.compile.compile_routing` turns it into what the request path reads.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from extproc.control.compile.scheduling import BUILTIN_PROFILES
from extproc.control.errors import ConfigError
from extproc.control.schema import Config
from extproc.core.protocols import kserve_v2

Loc = Sequence[str | int]


@dataclass(frozen=True, slots=True)
class Document:
    """A routing file as far as it is usable: ``config`` holds every section (and every
    model and deployment) that validated; ``problems`` lists the rest, with lines."""

    config: Config
    problems: list[str]
    root: yaml.Node | None
    deployment_index: tuple[int, ...] = ()
    """The file's index of each of ``config.deployments`` (invalid ones are left out)."""


def _yaml_line(root: yaml.Node | None, loc: Loc) -> int | None:
    """Best-effort 1-based line of the YAML node at ``loc``. Mapping keys may contain
    dots (model names), so a run of string parts is joined when that names a key."""
    node = root
    line = None if node is None else node.start_mark.line + 1
    parts = list(loc)
    i = 0
    while i < len(parts) and node is not None:
        part = parts[i]
        if isinstance(node, yaml.MappingNode):
            keys = {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}
            nxt = None
            for j in range(len(parts), i, -1):  # the longest dotted run that is a key
                run = parts[i:j]
                if all(isinstance(p, str) for p in run) and ".".join(map(str, run)) in keys:
                    key, nxt = keys[".".join(map(str, run))]
                    line = key.start_mark.line + 1
                    i = j
                    break
            if nxt is None:
                return None if i == 0 else line  # absent: no line of its own at the top
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
            if node is not None:
                line = node.start_mark.line + 1
            i += 1
        else:
            break
    return line


def _fmt_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


_KEY_PATH = re.compile(r"^([A-Za-z_][^\s:#]*?)(?:#[^:]*)?:\s")
_PATH_PART = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")


def _parse_loc(path: str) -> list[str | int]:
    return [int(i) if i else name for i, name in _PATH_PART.findall(path)]


def locate(problems: Sequence[str], root: yaml.Node | None) -> list[str]:
    """Prefix ``line N:`` to problems that start with a key path (``rules[2].when: ...``,
    ``models.m.spec#/m/openai: ...``) and have no line yet."""
    out = []
    for p in problems:
        m = _KEY_PATH.match(p)
        line = _yaml_line(root, _parse_loc(m.group(1))) if m and root is not None else None
        out.append(f"line {line}: {p}" if line and not p.startswith("line ") else p)
    return out


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The schema class whose fields the key at ``loc`` is one of (for "did you mean")."""
    cls: type[BaseModel] = Config
    expect_key = False  # the next part is a mapping key or a list index, not a field
    for part in loc[:-1]:
        if expect_key:
            expect_key = False
            continue
        field = cls.model_fields.get(str(part))
        if field is None:
            return None
        inner, container = _inner_model(field.annotation)
        if inner is None:
            return None
        cls, expect_key = inner, container
    return None if expect_key else cls


def _inner_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model class inside an annotation, and whether it sits in a container."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = typing.get_origin(annotation)
    container = origin in (tuple, list, dict) or (
        isinstance(origin, type) and issubclass(origin, Mapping)
    )
    for arg in typing.get_args(annotation):  # Optional, Annotated, tuple[...], Mapping[...]
        inner, nested = _inner_model(arg)
        if inner is not None:
            return inner, container or nested
    return None, False


def _did_you_mean(loc: Loc) -> str:
    cls = _model_at(loc)
    if cls is None or not loc:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(cls.model_fields), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _schema_problems(exc: ValidationError, root: yaml.Node | None) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        # Pydantic tags union members in loc; drop type names it inserts.
        loc = [p for p in loc if p not in ("str", "int", "list[...]", "tuple[...]")]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + _did_you_mean(loc)
        if not loc:
            problems.extend(locate(msg.splitlines(), root))
            continue
        line = _yaml_line(root, loc)
        where = f"line {line}: " if line else ""
        problems.append(f"{where}{_fmt_loc(loc)}: {msg}")
    return problems


def _valid_deployments(data: Mapping[str, Any]) -> tuple[int, ...]:
    deployments = data.get("deployments")
    if not isinstance(deployments, list):
        return ()
    return tuple(i for i, d in enumerate(deployments) if _validates({"deployments": [d]}))


def _validates(data: Mapping[str, Any]) -> bool:
    try:
        Config.model_validate(data)
    except ValidationError:
        return False
    return True


def _salvage(data: Mapping[str, Any]) -> dict[str, Any]:
    """The sections, models and deployments of ``data`` that validate on their own."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in Config.model_fields:
            continue
        if key == "models" and isinstance(value, Mapping):
            out[key] = {n: m for n, m in value.items() if _validates({key: {n: m}})}
        elif key == "deployments" and isinstance(value, list):
            out[key] = [value[i] for i in _valid_deployments(data)]
        elif _validates({key: value}):
            out[key] = value
    return out


def _str(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    return str(value) if isinstance(value, str | int) else None


def cross_reference_problems(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """References between sections, checked on the document as written (whatever its
    schema errors): each deployment's model and version, unique deployment names, KServe
    model names that end in a reserved path suffix, scheduling profiles named by
    ``scheduling.profile`` and by models (declared or built in)."""
    out: list[tuple[Loc, str]] = []
    models = data.get("models")
    models = models if isinstance(models, Mapping) else {}
    if not models:
        out.append((["models"], "declare at least one model"))
    deployments = data.get("deployments")
    seen: set[str] = set()
    for i, dep in enumerate(deployments if isinstance(deployments, list) else []):
        if not isinstance(dep, Mapping):
            continue
        name, model_name = _str(dep.get("name")), _str(dep.get("model"))
        if name is not None:
            if name in seen:
                out.append((["deployments", i, "name"], f"duplicate deployment name {name!r}"))
            seen.add(name)
        if model_name is None:
            continue
        model = models.get(model_name)
        if model is None:
            close = difflib.get_close_matches(model_name, [str(m) for m in models], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            out.append(
                (["deployments", i, "model"], f"{model_name!r} is not declared under models{hint}")
            )
            continue
        versions = model.get("versions") if isinstance(model, Mapping) else None
        version = _str(dep.get("version"))
        if isinstance(versions, list) and version is not None:
            declared = [v for v in (_str(v) for v in versions) if v is not None]
            if version not in declared:
                out.append(
                    (
                        ["deployments", i, "version"],
                        f"{version!r} is not one of model {model_name!r} versions {declared}",
                    )
                )
    for name, m in models.items():
        protocol = m.get("protocol") if isinstance(m, Mapping) else None
        suffix = kserve_v2.reserved_suffix(str(name)) if protocol == "kserve_v2" else None
        if suffix is not None:
            out.append((["models", name], (
                f"a KServe v2 model name cannot end in {suffix!r}: /v2/models/{name}... "
                f"would be read as model {str(name)[: -len(suffix)]!r} with that suffix"
            )))  # fmt: skip
    scheduling = data.get("scheduling")
    scheduling = scheduling if isinstance(scheduling, Mapping) else {}
    profiles_cfg = scheduling.get("profiles")
    profiles = {
        "default",
        *BUILTIN_PROFILES,
        *(profiles_cfg if isinstance(profiles_cfg, Mapping) else ()),
    }
    declared_profiles = ", ".join(sorted(map(str, profiles)))
    refs: list[tuple[Loc, Any]] = [(["scheduling", "profile"], scheduling.get("profile"))]
    for name, m in models.items():
        sched = m.get("scheduling") if isinstance(m, Mapping) else None
        if isinstance(sched, Mapping):
            refs.append((["models", name, "scheduling", "profile"], sched.get("profile")))
    for loc, ref in refs:
        if isinstance(ref, str) and ref not in profiles:
            out.append((loc, f"{ref!r} is not a profile (declared: {declared_profiles})"))
    return out


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    also = f" ({context})" if context else ""
    return f"{where}not valid YAML: {problem}{also}"


def parse_document(text: str, source: str = "<string>") -> Document:
    """Parse ``text`` and check it against the schema and its cross-references. A YAML
    syntax error or a file that is not a mapping raises :class:`ConfigError`; any other
    problem is listed in the returned document, beside the part that is valid."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [_yaml_problem(exc)]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["<root>: the routing file must be a mapping"])
    problems: list[str] = []
    try:
        config = Config.model_validate(data)
        kept = tuple(range(len(config.deployments)))
    except ValidationError as exc:
        problems.extend(_schema_problems(exc, root))
        kept = _valid_deployments(data)
        try:
            config = Config.model_validate(_salvage(data))
        except ValidationError:  # pragma: no cover - every salvaged section validated
            config, kept = Config(), ()
    for loc, msg in cross_reference_problems(data):
        line = _yaml_line(root, loc)
        problems.append(f"{f'line {line}: ' if line else ''}{_fmt_loc(loc)}: {msg}")
    return Document(config, problems, root, kept)


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate routing-file text; raise :class:`ConfigError` with every problem."""
    doc = parse_document(text, source)
    if doc.problems:
        raise ConfigError(source, doc.problems)
    return doc.config


def read_text(path: str | Path) -> str:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), [f"not UTF-8: {exc}"]) from exc


def load_config(path: str | Path) -> Config:
    return parse_config(read_text(path), str(path))
