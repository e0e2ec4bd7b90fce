"""Estimated tokens and cost of a request, without a tokenizer.

Prompt tokens are the prompt's characters / 4 (OpenAI's rule of thumb for English:
within about 20% for English prose, it undercounts code and most other languages, by up
to 2-3x for CJK text); completion tokens are the request's limit (``max_tokens``,
``max_completion_tokens``, ``max_output_tokens``, or KServe's ``parameters.max_tokens``)
or else a configured default. So the figure is an estimate of what a request *may*
cost, good for preferring the cheaper deployment and for a spend trend, not for billing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

CHARS_PER_TOKEN = 4
_LIMIT_KEYS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def prompt_text(body: Mapping[str, Any] | None) -> str:
    """The text a model would see first: chat message contents, completion prompt,
    responses input or KServe's ``text_input`` (strings and text parts only)."""
    if not body:
        return ""
    parts: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in messages:
            if not isinstance(m, dict):
                continue
            parts.append(str(m.get("role", "")))
            content = m.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(
                    p["text"]
                    for p in content
                    if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
        return "\x1e".join(parts)
    for key in ("prompt", "input"):
        value = body.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return "\x1e".join(v for v in value if isinstance(v, str))
    text_input = body.get("text_input")  # KServe v2 generate
    if isinstance(text_input, str):
        return text_input
    return ""


def prompt_tokens(body: Mapping[str, Any] | None) -> int:
    return math.ceil(len(prompt_text(body)) / CHARS_PER_TOKEN)


def completion_tokens(body: Mapping[str, Any] | None, default: int) -> int:
    """The request's completion limit, or ``default``."""
    if body:
        for source in (body, body.get("parameters")):
            if not isinstance(source, Mapping):
                continue
            for key in _LIMIT_KEYS:
                value = source.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    return value
    return default
