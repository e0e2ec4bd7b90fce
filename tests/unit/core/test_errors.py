"""Client input echoed in errors is bounded (the one shape every error has)."""

from __future__ import annotations

from extproc.core.errors import MAX_MESSAGE_CHARS, InvalidRequest, shown


def test_shown_bounds_and_says_how_much_was_cut() -> None:
    assert shown("abc") == "'abc'"
    long = shown("x" * 1000, limit=10)
    assert long == "'xxxxxxxxxx'... (990 more characters)"


def test_every_message_and_field_is_bounded() -> None:
    err = InvalidRequest("y" * 100_000, field="/" + "k" * 100_000)
    assert len(err.message) <= MAX_MESSAGE_CHARS
    assert err.field is not None and len(err.field) <= MAX_MESSAGE_CHARS
    assert err.message.endswith("more)")
