"""The few Consul HTTP API reads the registry needs, as blocking queries over aiohttp.

Why not py-consul: we need three read endpoints, blocking queries with Consul's
index-reset rules, per-call timeouts longer than the wait, and TLS/token/datacenter
settings from Consul's own environment variables. aiohttp is already a dependency
(metrics endpoint, dev servers), so a thin client here is less code to trust than
an extra client library and its asyncio adapter.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from extproc.control.schema import ConsulConfig


class ConsulUnavailable(Exception):
    """Consul could not be reached or answered with an error."""


@dataclass(frozen=True, slots=True)
class ConsulSettings:
    base_url: str
    token: str | None
    datacenter: str | None
    ssl_context: ssl.SSLContext | None
    verify: bool

    @classmethod
    def resolve(cls, cfg: ConsulConfig, env: Mapping[str, str] | None = None) -> ConsulSettings:
        """Routing-file values first, then Consul's environment variables, then defaults."""
        env = os.environ if env is None else env
        addr = cfg.address or env.get("CONSUL_HTTP_ADDR") or "127.0.0.1:8500"
        https = env.get("CONSUL_HTTP_SSL", "").lower() in ("1", "true")
        if addr.startswith("unix://"):
            raise ValueError("unix:// Consul addresses are not supported; use host:port")
        if "://" not in addr:
            addr = ("https://" if https else "http://") + addr
        token = cfg.token or env.get("CONSUL_HTTP_TOKEN")
        token_file = env.get("CONSUL_HTTP_TOKEN_FILE")
        if not token and token_file:
            token = Path(token_file).read_text().strip()
        verify = cfg.tls_verify
        if verify is None:
            verify = env.get("CONSUL_HTTP_SSL_VERIFY", "true").lower() not in ("0", "false")
        ctx = None
        if addr.startswith("https://"):
            ca = cfg.ca_file or env.get("CONSUL_CACERT")
            ctx = ssl.create_default_context(cafile=ca)
            cert = cfg.cert_file or env.get("CONSUL_CLIENT_CERT")
            key = cfg.key_file or env.get("CONSUL_CLIENT_KEY")
            if cert:
                ctx.load_cert_chain(cert, key)
            if not verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        dc = cfg.datacenter or env.get("CONSUL_DATACENTER") or None
        return cls(addr.rstrip("/"), token, dc, ctx, verify)


class ConsulClient:
    def __init__(self, settings: ConsulSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"ConsulClient({self.settings.base_url}, dc={self.settings.datacenter})"

    async def start(self) -> None:
        headers = {"X-Consul-Token": self.settings.token} if self.settings.token else {}
        connector = aiohttp.TCPConnector(
            ssl=self.settings.ssl_context if self.settings.ssl_context else False, limit=0
        )
        self._session = aiohttp.ClientSession(headers=headers, connector=connector, trust_env=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def blocking_get(self, path: str, index: int, wait_s: int) -> tuple[Any, int]:
        """GET ``path`` as a blocking query; returns the JSON and the next index to use."""
        assert self._session is not None, "ConsulClient.start() has not run"
        params = {"index": str(index), "wait": f"{wait_s}s"}
        if self.settings.datacenter:
            params["dc"] = self.settings.datacenter
        # Consul adds up to wait/16 of jitter; allow for it and a slow network.
        timeout = aiohttp.ClientTimeout(total=wait_s + wait_s / 16 + 5, connect=3)
        try:
            async with self._session.get(
                self.settings.base_url + path, params=params, timeout=timeout
            ) as resp:
                if resp.status != 200:
                    text = (await resp.text())[:200]
                    raise ConsulUnavailable(f"GET {path}: HTTP {resp.status}: {text}")
                data = await resp.json()
                raw_index = resp.headers.get("X-Consul-Index", "0")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ConsulUnavailable(f"GET {path}: {type(exc).__name__}: {exc}") from exc
        try:
            new = int(raw_index)
        except ValueError:
            new = 0
        # Consul's rules: an index that goes backwards means reset; never use <= 0.
        if new < index:
            new = 0
        return data, max(new, 1)
