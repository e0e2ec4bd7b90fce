"""Shared pieces of the routing file's schema: the strict frozen base model, the
failure mode, size constants and name patterns."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
GRPC_OVERHEAD_BYTES = 256 * 1024
"""Headers, metadata and framing on top of a body in one ext_proc gRPC message."""
DNS_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
HOST_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})$"
)
TAG_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class FailureMode(StrEnum):
    """What Envoy does when the router cannot answer (down, timeout)."""

    OPEN = "open"
    CLOSED = "closed"
