"""Loading the routing file: YAML into a validated :class:`~extproc.control.schema.Config`.

Every problem is reported with the path of the offending key and its line.
A ``Config`` is plain data; :func:`extproc.control.compile.compile_routing` turns it
into what the request path reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError

from extproc.control.errors import ConfigError
from extproc.control.schema import Config


def _yaml_line(root: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """Best-effort 1-based line of the YAML node at ``loc``."""
    node = root
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, val in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    nxt = val
                    line = key.start_mark.line + 1
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
            if node is not None:
                line = node.start_mark.line + 1
        else:
            break
        if node is None:
            break
    return line


def _fmt_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate routing-file text; raise :class:`ConfigError` with every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["<root>: the routing file must be a mapping"])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
            # Pydantic tags union members in loc; drop type names it inserts.
            loc = [p for p in loc if p not in ("str", "int", "list[...]", "tuple[...]")]
            msg = err["msg"].removeprefix("Value error, ")
            if not loc:  # cross-checks: each line already names its key path
                problems.extend(msg.splitlines())
                continue
            line = _yaml_line(root, loc)
            where = f"line {line}: " if line else ""
            problems.append(f"{where}{_fmt_loc(loc)}: {msg}")
        raise ConfigError(source, problems) from exc
    return config


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), [f"not UTF-8: {exc}"]) from exc
    return parse_config(text, str(p))
