"""Micro-benchmark: content-rule evaluation (``RuleSet.evaluate``) in-process.

The first two rules of the team's brief against a ~4 KiB chat body: no match (both
rules evaluated in full, the worst case) and a match on the first rule (which also
builds the match's ``why``). Prints microseconds per call.

Run: ``python -m loadtest.rules_cost`` from the repository root.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import yaml

from extproc.control.compile.rules import compile_rules
from extproc.core.request import InferenceRequest, RequestHead

CHAT = "/v1/chat/completions"
N = 20000

# The first two rules of the brief's example (tests/unit/test_rules.py, BRIEF).
RULES = """
- name: tools-or-long-prompts-to-large
  when:
    path: /v1/chat/completions
    model: chat-small
    any:
      - has: [tools]
      - prompt_chars: {gt: 4000}
      - messages: {gte: 12}
      - max_tokens: {gt: 1024}
  route:
    model: chat-large
- name: medical
  when:
    last_user_message: {regex: "(?i)\\\\b(patient|diagnos\\\\w*|symptoms?)\\\\b"}
  route:
    capabilities: "domain=medical"
"""


def req(body: dict[str, Any]) -> InferenceRequest:
    head = RequestHead("POST", CHAT, {})
    return InferenceRequest("openai", "chat-small", None, head, body, source="body 'model'")


def chat_4k() -> dict[str, Any]:
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a helpful assistant. " * 8}
    ]
    for i in range(4):
        msgs.append({"role": "user", "content": f"question {i}: " + "lorem ipsum dolor sit " * 18})
        msgs.append({"role": "assistant", "content": "answer " + "consectetur adipiscing " * 16})
    msgs.append({"role": "user", "content": "And what about the weather tomorrow in Paris?"})
    return {"model": "chat-small", "messages": msgs, "max_tokens": 256, "temperature": 0.2}


def main() -> None:
    body = chat_4k()
    size = len(orjson.dumps(body))
    assert 3500 < size < 4700, size
    two = compile_rules(yaml.safe_load(RULES))
    request = req(body)
    assert two.evaluate(request) is None  # the worst case: both rules evaluated in full
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(N):
            two.evaluate(request)
        best = min(best, (time.perf_counter() - t0) / N)
    print(f"evaluate(): 2 rules, {size}-byte chat body, no match: {best * 1e6:.2f} us")
    hit_req = req({"model": "chat-small", "messages": [{"role": "user", "content": "x" * 5000}]})
    assert two.evaluate(hit_req) is not None
    t0 = time.perf_counter()
    for _ in range(N):
        two.evaluate(hit_req)
    per_call_us = (time.perf_counter() - t0) / N * 1e6
    print(f"evaluate(): first rule matches (builds why): {per_call_us:.2f} us")


if __name__ == "__main__":
    main()
