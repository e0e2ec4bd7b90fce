"""Micro-benchmark: body decoding + protocol + spec checks, and the JSON Schema validators.

Run: ``python -m tests.bench_validation`` (not collected by pytest). Needs the
sample corpus; the validator comparison also needs ``jsonschema`` (optional).
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import timeit
from collections.abc import Callable
from typing import Any

import fastjsonschema
import orjson

from extproc.control.compile.specs import parse_specs
from extproc.core.protocols import openai
from extproc.core.protocols.json_body import loads_object
from tests.corpus import SAMPLES, load_cases

CHAT = "/v1/chat/completions"
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog;", "note:", "see"]


def per_call(f: Callable[[], object], n: int) -> float:
    return min(timeit.repeat(f, number=n, repeat=5)) / n * 1e6


def chat_body(target: int, rnd: random.Random) -> bytes:
    """A chat-small-valid body of about ``target`` bytes (<= 16 messages, <= 16000 chars)."""
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "You are a helpful assistant."}]
    body = {"model": "chat-small", "messages": msgs, "temperature": 0.7, "top_p": 0.95,
            "max_tokens": 512, "n": 1, "stream": True, "stream_options": {"include_usage": True},
            "stop": ["\n\nUser:"], "seed": 42}  # fmt: skip

    def english(n: int) -> str:
        return " ".join(rnd.choice(WORDS) for _ in range(n // 4))[: max(n, 0)]

    if target <= 8192:
        while len(orjson.dumps(body)) < target - 700:
            msgs.append({"role": ["user", "assistant"][len(msgs) % 2], "content": english(600)})
        msgs.append({"role": "user", "content": english(target - len(orjson.dumps(body)) - 40)})
        return orjson.dumps(body)
    for i in range(9):  # 13,500 CJK characters (~40 KB) plus an inline image
        text = "".join(chr(0x4E00 + rnd.randrange(20000)) for _ in range(1500))
        msgs.append({"role": ["user", "assistant"][i % 2], "content": text})
    url = "data:image/png;base64," + base64.b64encode(rnd.randbytes(15000)).decode()
    image = {"type": "image_url", "image_url": {"url": url}}
    msgs.append({"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]})
    image["image_url"]["url"] += "A" * max(0, target - len(orjson.dumps(body)))
    return orjson.dumps(body)


def bench_pipeline() -> None:
    spec = parse_specs(json.loads((SAMPLES / "specs.json").read_text()))["chat-small"]
    rnd = random.Random(7)

    def full(raw: bytes) -> list[str]:
        body = loads_object(raw)
        openai.check_request(CHAT, body)
        return spec.check(body, "openai", CHAT)

    print("decode + protocol + spec (chat-small), best of 5, us per call")
    for target in (1024, 4096, 65536):
        raw = chat_body(target, rnd)
        assert full(raw)
        _row(raw, spec, full, 20000 if target < 10000 else 2000)


def _row(raw: bytes, spec: Any, full: Callable[[bytes], object], n: int) -> None:
    body = orjson.loads(raw)
    print(
        f"  {len(raw):6d} B: orjson.loads {per_call(lambda: orjson.loads(raw), n):6.1f}"
        f" | loads_object {per_call(lambda: loads_object(raw), n):6.1f}"
        f" | protocol {per_call(lambda: openai.check_request(CHAT, body), n):5.1f}"
        f" | spec {per_call(lambda: spec.check(body, 'openai', CHAT), n):5.1f}"
        f" | all {per_call(lambda: full(raw), n):6.1f}"
    )


def bench_validators() -> None:
    try:
        import jsonschema
    except ImportError:
        print("jsonschema not installed: validator comparison skipped")
        return
    specs = json.loads((SAMPLES / "specs.json").read_text())
    bodies = [
        (c.needs_spec, json.loads(c.body))
        for c in load_cases()
        if c.needs_spec and specs[c.needs_spec]["protocol"] == "openai" and c.body[:1] == b"{"
    ]
    schemas = {k: v["openai"]["json_schema"] for k, v in specs.items() if "openai" in v}
    fast = {
        k: fastjsonschema.compile(s, use_default=False, use_formats=False)
        for k, s in schemas.items()
    }
    slow = {k: jsonschema.Draft202012Validator(s) for k, s in schemas.items()}

    def run_fast() -> None:
        for sid, b in bodies:
            with contextlib.suppress(fastjsonschema.JsonSchemaValueException):
                fast[sid](b)

    def run_slow() -> None:
        for sid, b in bodies:
            next(slow[sid].iter_errors(b), None)

    n = 500
    print(f"JSON Schema over {len(bodies)} corpus OpenAI bodies, us per body")
    print(f"  fastjsonschema {per_call(run_fast, n) / len(bodies):6.2f}")
    print(f"  jsonschema     {per_call(run_slow, n) / len(bodies):6.2f}")


if __name__ == "__main__":
    bench_validators()
    bench_pipeline()
