"""Helpers shared by unit and integration tests."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, overload

ROOT = Path(__file__).resolve().parents[1]
"""The repository root (``examples/``, ``envoy/``)."""

T = TypeVar("T")
_NOTHING = object()


@overload
async def eventually(
    condition: Callable[[], Awaitable[T]],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    what: str | None = ...,
) -> T: ...


@overload
async def eventually(
    condition: Callable[[], T],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    what: str | None = ...,
) -> T: ...


async def eventually(
    condition: Callable[[], Any],
    *,
    timeout: float = 30.0,  # noqa: ASYNC109 (the polling budget, not one call's timeout)
    interval: float = 0.1,
    what: str | None = None,
) -> Any:
    """Poll ``condition`` until it holds and return what it returned.

    ``condition`` is a plain or an async callable. It holds when it returns a truthy
    value; returning a falsy value or raising an ``Exception`` (an ``assert`` inside it,
    a refused connection) means "not yet", and it is called again ``interval`` seconds
    later. A condition written with asserts ends with ``return True`` (or returns the
    value the test wants next).

    When ``timeout`` seconds pass first, this raises ``AssertionError`` naming the
    condition (or ``what``) and showing the last value it returned or the last exception
    it raised (also chained as ``__cause__``). An attempt still running at the deadline is
    cancelled. ``timeout`` is a ceiling against hangs, not a performance claim: make it
    generous; a condition that holds returns as soon as it is seen to hold.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    name = what or getattr(condition, "__qualname__", repr(condition))
    last: object = _NOTHING
    error: BaseException | None = None
    cut_off = False
    attempts = 0
    while True:
        attempts += 1
        limit = asyncio.timeout_at(deadline)
        try:
            async with limit:
                result = condition()
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:  # "not yet"
            if limit.expired():
                cut_off = True  # keep what the previous attempt said
            else:
                error, last = exc, _NOTHING
        else:
            if result:
                return result
            error, last = None, result
        now = loop.time()
        if now >= deadline:
            break
        await asyncio.sleep(min(interval, deadline - now))
    if error is not None:
        detail = f"last raised {type(error).__name__}: {error}"
    elif last is not _NOTHING:
        detail = f"last returned {last!r}"
        if last is None:
            detail += " (a condition written with asserts must end with `return True`)"
    else:
        detail = "no attempt finished"
    if cut_off:
        detail += "; the attempt running at the deadline was cancelled"
    raise AssertionError(
        f"{name} did not hold within {timeout:g}s ({attempts} attempts); {detail}"
    ) from error


async def finish(proc: asyncio.subprocess.Process, timeout: float = 300.0) -> bytes:  # noqa: ASYNC109
    """``proc``'s stdout once it exits. ``timeout`` guards against a hang: past it (or
    on any error) the process is killed and reaped, never left running."""
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return out or b""
