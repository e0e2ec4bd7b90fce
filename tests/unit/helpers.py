from __future__ import annotations

import asyncio
from collections.abc import Sequence

from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from extproc.control.compile import compile_routing, router_state
from extproc.control.loading import parse_config
from extproc.control.registry import RegistryInputs, StaticRegistry
from extproc.core.envoy_wire import processing_messages
from extproc.core.flow import RequestFlow, RouterState

BASIC = """
models:
  chat-small: {protocol: openai, versions: ["1", "2"]}
  resnet50: {protocol: kserve_v2, versions: ["1", "2"]}
  "org/summarizer:latest": {protocol: generic, versions: ["7"]}
deployments:
  - {name: cs1, model: chat-small, version: "1", endpoints: ["127.0.0.1:8001"]}
  - {name: cs2, model: chat-small, version: "2", endpoints: ["127.0.0.1:8002", "127.0.0.1:8003"],
     tags: {accelerator: a100}}
  - {name: rn1, model: resnet50, version: "1", endpoints: ["127.0.0.1:8101"]}
  - {name: rn2, model: resnet50, version: "2", endpoints: ["127.0.0.1:8102"], enabled: false}
  - {name: sum, model: "org/summarizer:latest", version: "7", endpoints: ["[::1]:8201"]}
"""


def state_for(text: str = BASIC) -> RouterState:
    """The hot path's state for a routing-file text, on the static registry."""
    compiled = compile_routing(parse_config(text), "<test>")
    inputs = RegistryInputs.of(compiled)
    registry = StaticRegistry(inputs)
    asyncio.run(registry.start())
    return router_state(compiled, registry.snapshot)


def run_flow(
    state: RouterState,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
) -> tuple[RequestFlow, list[ep.ProcessingResponse | None]]:
    flow = RequestFlow(state)
    out = []
    for msg in processing_messages(method, path, headers, body):
        out.append(flow.receive(msg))
        if flow.outcome.error is not None or flow.outcome.decision is not None:
            break
    return flow, out


def set_headers(resp: ep.ProcessingResponse) -> dict[str, str]:
    kind = "request_headers" if resp.HasField("request_headers") else "request_body"
    common = getattr(resp, kind).response
    return {h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers}
