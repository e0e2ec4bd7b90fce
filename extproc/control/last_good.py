"""The last routing file that loaded, kept on disk for a worker that restarts while the
file is broken (``serve --last-good PATH``; the supervisor and ``up`` pass one).

A worker writes the text of every routing file it accepts (start-up and reloads); a
worker that starts while the file does not load starts on that text instead, compiled
as if it were the file (``spec_files`` stay relative to the routing file), and says so.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

from extproc.control.compile import CompiledRouting
from extproc.control.errors import ConfigError
from extproc.control.reload import compile_text


def save_last_good(path: Path, compiled: CompiledRouting) -> None:
    """Write ``compiled``'s text to ``path`` atomically (workers share the file)."""
    if not compiled.text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".last-good-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(compiled.text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_last_good(path: Path, source: Path) -> CompiledRouting:
    """The last good text at ``path``, compiled as routing file ``source``;
    :class:`ConfigError` if there is none or it no longer compiles."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"no last good configuration: {exc.strerror}"]) from exc
    return replace(compile_text(text, str(source)), last_good=True)
