"""How close the gateway's token estimate (``extproc.core.usage``: characters / 4) comes
to a real server's ``usage.prompt_tokens``, on llm-d-inference-sim.

Usage: python -m loadtest.token_estimate  (needs $INFERENCE_SIM_BIN or the cached build)

The simulator runs with ``--force-dummy-tokenizer`` (no tokenizer download from a model
hub), so its counts are its dummy tokenizer's, not a real model's: this measures the
estimate against what that server reports and bills, which is what quota reconciliation
replaces the estimate with.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import httpx

from extproc.core import usage
from extproc.dev.inference_sim import InferenceSim, inference_sim_binary

PROMPTS = {
    "english prose": "The quick brown fox jumps over the lazy dog while the farmer "
    "watches from the porch, wondering whether the weather will hold until the harvest. " * 6,
    "short question": "What is the capital of France?",
    "python code": "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
    "for i in range(10):\n    print(i, fib(i))\n" * 4,
    "json": '{"user": {"id": 12345, "tags": ["a", "b", "c"], "active": true}}' * 5,
    "chinese": "人工智能正在改变我们的生活方式和工作方式\uff0c未来将会更加智能\u3002" * 4,
    "numbers": " ".join(str(i * 7919 % 100000) for i in range(120)),
}


async def main() -> int:
    binary = inference_sim_binary()
    if binary is None:
        print("no llm-d-inference-sim: run scripts/install-inference-sim", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        sim = InferenceSim(binary, "sim-model", log=Path(tmp) / "sim.log", mode="echo")
        async with sim, httpx.AsyncClient(trust_env=False, timeout=30) as client:
            print(f"{'prompt':<16} {'chars':>6} {'estimate':>9} {'server':>7} {'ratio':>6}")
            for name, text in PROMPTS.items():
                body = {"model": "sim-model", "max_tokens": 1,
                        "messages": [{"role": "user", "content": text}]}  # fmt: skip
                r = await client.post(sim.url + "/v1/chat/completions", json=body)
                r.raise_for_status()
                real = r.json()["usage"]["prompt_tokens"]
                est = usage.prompt_tokens(body)
                print(f"{name:<16} {len(text):>6} {est:>9} {real:>7} {est / real:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
