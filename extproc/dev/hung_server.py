"""A model server that never answers, for the fault tests' first-byte timeouts."""

from __future__ import annotations

import asyncio


class HungServer:
    """A model server that hangs: it accepts connections and reads requests, and never
    answers (fault tests: first-byte timeouts). ``accepted`` counts connections."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    def __repr__(self) -> str:
        return f"HungServer({self.address if self._server else None}, accepted={self.accepted})"

    @property
    def address(self) -> str:
        assert self._server is not None, "HungServer.start() has not run"
        return f"{self.host}:{self._server.sockets[0].getsockname()[1]}"

    async def _hang(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._conns.add(writer)
        try:
            while await reader.read(65536):
                pass  # read everything, answer nothing
        except ConnectionError:
            pass
        finally:
            self._conns.discard(writer)
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._hang, self.host, 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.close()
            await self._server.wait_closed()
            self._server = None
