"""``async with`` for the servers and processes the dev tools start."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class StartStop:
    """Started on entering ``async with``, stopped on leaving it (subclasses define
    :meth:`start` and :meth:`stop`)."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
