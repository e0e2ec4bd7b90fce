"""The test helpers themselves: ``eventually`` waits, returns and reports."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.support import eventually


async def test_returns_the_first_truthy_value_of_a_sync_condition() -> None:
    calls = itertools.count(1)
    assert await eventually(lambda: next(calls) >= 3 and "ready", interval=0.001) == "ready"
    assert next(calls) == 4  # called exactly three times


async def test_awaits_an_async_condition_and_retries_on_exceptions() -> None:
    calls = 0

    async def condition() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        assert calls >= 3, f"only {calls} calls"
        return calls

    assert await eventually(condition, interval=0.001) == 3


async def test_timeout_shows_the_last_value() -> None:
    with pytest.raises(AssertionError) as info:
        await eventually(lambda: 0, timeout=0.05, interval=0.01)
    assert "did not hold within 0.05s" in str(info.value)
    assert "last returned 0" in str(info.value)


async def test_timeout_shows_the_last_exception_and_chains_it() -> None:
    def condition() -> bool:
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(AssertionError) as info:
        await eventually(condition, timeout=0.05, interval=0.01, what="the server answers")
    text = str(info.value)
    assert text.startswith("the server answers did not hold within 0.05s")
    assert "last raised ConnectionRefusedError: nobody home" in text
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


async def test_none_hints_at_a_missing_return() -> None:
    def condition() -> None:
        assert True

    with pytest.raises(AssertionError, match="must end with `return True`"):
        await eventually(condition, timeout=0.03, interval=0.01)


async def test_an_attempt_still_running_at_the_deadline_is_cancelled() -> None:
    attempts = 0

    async def slow() -> bool:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            return False
        await asyncio.sleep(60)
        return True

    with pytest.raises(AssertionError) as info:
        await eventually(slow, timeout=0.1, interval=0.01)
    assert "last returned False" in str(info.value)
    assert "the attempt running at the deadline was cancelled" in str(info.value)
