"""Structured logging: one JSON object per line, with Envoy's ``x-request-id``."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from extproc.core.flow import RequestFlow

_requests = logging.getLogger("extproc.server")
_STD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.worker is not None:
            out["worker"] = self.worker
        for key, value in record.__dict__.items():
            if key not in _STD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def setup(level: str = "info", *, json: bool = True, worker: int | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json:
        handler.setFormatter(JsonFormatter(worker))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


MAX_LOGGED_CHARS = 256
"""Client input in a log line (path, request id) is cut to this many characters."""


def _clip(text: str) -> str:
    if len(text) <= MAX_LOGGED_CHARS:
        return text
    return text[:MAX_LOGGED_CHARS] + f"... ({len(text) - MAX_LOGGED_CHARS} more characters)"


def log_outcome(flow: RequestFlow) -> None:
    """Every rejection at info, every routing decision at debug (with the request id)."""
    out = flow.outcome
    head = flow.head
    rid = head.request_id if head else ""
    if out.error is not None:
        _requests.info(
            "request rejected",
            extra={
                "request_id": _clip(rid),
                "status": out.error.status,
                "error_type": out.error.type,
                "reason": out.error.message,
                "path": _clip(head.path_only) if head else "",
                **({"tenant": out.tenant, "credential": out.credential} if out.tenant else {}),
            },
        )
    elif _requests.isEnabledFor(logging.DEBUG) and out.decision is not None:
        d = out.decision
        _requests.debug(
            "request routed",
            extra={
                "request_id": rid,
                "model": d.model,
                "version": d.version,
                "deployment": d.deployment,
                "endpoint": d.endpoints[0],
                "reason": d.reason,
            },
        )
