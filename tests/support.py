"""Helpers shared by unit and integration tests."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, overload
from urllib.parse import unquote

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


def read_error(path: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """An error response, checked against its path's protocol shape, as one dict.

    ``type`` comes from ``x-model-router-error``, ``field`` from
    ``x-model-router-error-field`` (percent-decoded; ``None`` when absent), ``message``
    from the body: OpenAI paths carry the OpenAI error object (``param`` is the field,
    or the header name, and ``code`` the type), KServe v2 paths ``{"error": "<message>"}``
    and the rest the router's ``{"error": {"type", "message", "field"}}``. ``header``
    is OpenAI's ``param`` when it names a header.
    """
    from extproc.core.protocols import error_protocol

    hdrs = {k.lower(): v for k, v in headers.items()}
    assert hdrs["content-type"].startswith("application/json"), hdrs
    etype = hdrs["x-model-router-error"]
    raw_field = hdrs.get("x-model-router-error-field")
    field = unquote(raw_field) if raw_field is not None else None
    doc = json.loads(body)
    protocol = error_protocol(path.partition("?")[0])
    header = None
    if protocol == "openai":
        err = doc["error"]
        assert set(err) == {"message", "type", "param", "code"}, doc
        assert err["code"] == etype, (doc, etype)
        assert err["type"] in ("invalid_request_error", "rate_limit_error", "server_error"), doc
        if field is not None:
            assert err["param"] == field, (doc, field)
        else:
            header = err["param"]
        message = err["message"]
    elif protocol == "kserve_v2":
        assert set(doc) == {"error"} and isinstance(doc["error"], str), doc
        message = doc["error"]
    else:
        err = doc["error"]
        assert set(err) == {"type", "message", "field"}, doc
        assert (err["type"], err["field"]) == (etype, field), (doc, etype, field)
        message = err["message"]
    assert isinstance(message, str) and message, doc
    return {"type": etype, "message": message, "field": field, "header": header}


def http_error(resp: Any) -> dict[str, Any]:
    """:func:`read_error` of an ``httpx.Response``."""
    return read_error(resp.request.url.path, dict(resp.headers), resp.content)
