"""Endpoint addresses: the one place that tells an IP literal from a hostname and resolves.

Envoy routes to ``ip:port`` (the hot path never resolves), so registries turn every
``host:port`` into ``ip:port`` when they build a snapshot. :class:`Resolver` caches
answers for ``ttl_s`` and resolves again after that, so a hostname that moves is
followed by the next snapshot built after its entry expires.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time


class ResolveError(OSError):
    """A hostname that does not resolve."""


def is_ip(host: str) -> bool:
    """True for an IPv4 or IPv6 literal (without brackets)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Resolver:
    """Resolves ``host:port`` to ``ip:port`` (first address returned), with a TTL cache."""

    def __init__(self, ttl_s: float = 30.0) -> None:
        self.ttl_s = ttl_s
        self._cache: dict[tuple[str, int], tuple[str, float]] = {}

    def __repr__(self) -> str:
        return f"Resolver(ttl_s={self.ttl_s}, cached={len(self._cache)})"

    async def address(self, host: str, port: int) -> str:
        """``ip:port`` for ``host:port``; :class:`ResolveError` if the name does not resolve."""
        if is_ip(host):
            return join_host_port(host, port)
        now = time.monotonic()
        hit = self._cache.get((host, port))
        if hit is not None and hit[1] > now:
            return hit[0]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ResolveError(f"cannot resolve host {host!r}: {exc}") from exc
        family, _, _, _, sockaddr = infos[0]
        ip = str(sockaddr[0])
        addr = f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"
        self._cache[(host, port)] = (addr, now + self.ttl_s)
        return addr
