"""``model-router explain``: one request through the real flow, step by step.

Offline (the default): a fresh registry (Consul: one sync, then stopped) and no live
signals. Live (``--router URL``): a running worker explains the request on its own
state, with its live load, latency, in-flight counts and ejections.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import aiohttp

from extproc.control.compile import CompiledRouting, router_state
from extproc.control.explain import explain_state
from extproc.control.registry import RegistryInputs, make_registry


async def explain_request(
    compiled: CompiledRouting,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | None,
) -> dict[str, Any]:
    """The decision for one request as JSON-ready data, on a fresh registry."""
    registry = make_registry(compiled.config.registry, RegistryInputs.of(compiled))
    await registry.start()
    try:
        state = router_state(compiled, registry.snapshot)
        return explain_state(compiled, state, registry.describe(), method, path, headers, body)
    finally:
        await registry.stop()


async def explain_live(
    url: str,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | None,
) -> dict[str, Any]:
    """The decision a running worker would take (``url``: its metrics address)."""
    payload = {
        "method": method,
        "path": path,
        "headers": [list(h) for h in headers],
        "body": None if body is None else base64.b64encode(body).decode(),
    }
    try:
        async with (
            aiohttp.ClientSession(trust_env=False) as session,
            session.post(url.rstrip("/") + "/explain", json=payload) as r,
        ):
            doc: dict[str, Any] = await r.json()
    except aiohttp.ClientError as exc:
        raise RuntimeError(f"cannot ask the worker at {url}: {exc}") from exc
    if r.status != 200:
        raise RuntimeError(f"{url}: {r.status}: {doc}")
    return doc
