"""The minimal ext_proc probe: grpc.aio + upb + uvloop, round robin and nothing else.

The reference point for the router's CPU targets, measured on the same machine in the
same bench run (``scripts/bench --router minimal|both``). KServe ``/v2/models/...``
is decided on headers (``mode_override`` skips the body); anything else waits for the
buffered body, reads ``"model"`` with orjson and answers a ``BodyResponse``. Both set
``x-gateway-destination-endpoint`` and the deployment's cluster like the router (the
bench's deployments are ``<model>-<i>``, one per endpoint; Envoy's clusters and routes
come from the real router over xDS). No metrics, no logging.

    python loadtest/minimal_extproc.py --port 50051 --endpoints 127.0.0.1:8001,127.0.0.1:8002
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
from collections.abc import AsyncIterator, Iterator

import grpc
import orjson
import uvloop
from envoy.config.core.v3 import base_pb2 as core
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
DESTINATION_HEADER = "x-gateway-destination-endpoint"
CLUSTER_HEADER = "x-model-router-cluster"
CLUSTER_PREFIX = b"deployment."
KSERVE_PREFIX = b"/v2/models/"
MAX_MESSAGE = 16 * 1024 * 1024
_OVERWRITE = core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_SKIP_BODY = pm.ProcessingMode.NONE


def _route(common: ep.CommonResponse, pick: tuple[int, bytes], model: bytes) -> None:
    index, endpoint = pick
    for key, value in (
        (DESTINATION_HEADER, endpoint),
        (CLUSTER_HEADER, CLUSTER_PREFIX + model + b"-" + str(index).encode()),
    ):
        opt = common.header_mutation.set_headers.add()
        opt.header.key = key
        opt.header.raw_value = value
        opt.append_action = _OVERWRITE
    common.clear_route_cache = True


class Processor(ep_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, endpoints: list[bytes]) -> None:
        self._next: Iterator[tuple[int, bytes]] = itertools.cycle(enumerate(endpoints))

    async def Process(
        self, request_iterator: AsyncIterator[ep.ProcessingRequest], context: object
    ) -> AsyncIterator[ep.ProcessingResponse]:
        async for msg in request_iterator:
            kind = msg.WhichOneof("request")
            resp = ep.ProcessingResponse()
            if kind == "request_headers":
                headers = msg.request_headers
                path = b""
                for h in headers.headers.headers:
                    if h.key == ":path":
                        path = h.raw_value or h.value.encode()
                        break
                if path.startswith(KSERVE_PREFIX) or headers.end_of_stream:
                    model = path[len(KSERVE_PREFIX) :].split(b"/", 1)[0]
                    _route(resp.request_headers.response, next(self._next), model)
                    resp.mode_override.request_body_mode = _SKIP_BODY
                else:
                    resp.request_headers.SetInParent()  # empty: Envoy sends the body next
            elif kind == "request_body":
                model = orjson.loads(msg.request_body.body).get("model", "")
                _route(resp.request_body.response, next(self._next), model.encode())
            else:
                getattr(resp, kind).SetInParent()  # never sent by the shipped config
            yield resp


async def serve(port: int, endpoints: list[bytes]) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
        ]
    )
    ep_grpc.add_ExternalProcessorServicer_to_server(Processor(endpoints), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    for svc in ("", EXT_PROC_SERVICE):
        await health_servicer.set(svc, health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    p = argparse.ArgumentParser(description="Minimal round-robin ext_proc (bench probe).")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--endpoints", required=True, help="ip:port,ip:port")
    a = p.parse_args()
    endpoints = [e.strip().encode() for e in a.endpoints.split(",") if e.strip()]
    if not endpoints:
        p.error("--endpoints: at least one ip:port")
    uvloop.run(serve(a.port, endpoints))


if __name__ == "__main__":
    main()
