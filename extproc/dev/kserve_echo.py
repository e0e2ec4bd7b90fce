"""A KServe ``ModelServer`` (KServe's own server from the ``kserve`` package) with one tiny
model per name given on the command line, for tests, the demo and benchmarks.

Runs in its own virtualenv (``scripts/install-kserve``; see :mod:`extproc.dev.backends`),
never imported by the rest of the package: ``python kserve_echo.py --http-port P m1 m2``.

Each model echoes its inputs back as outputs of the same name, datatype, shape and
values (FP32, INT64, BYTES, BOOL..., JSON or the binary tensor extension, as KServe
decodes them), so a client can check a round trip byte for byte; a request may ask
for a subset with ``outputs``. The server, its HTTP handling and the Open Inference
Protocol codec are KServe's; only the listen address is changed, to loopback
(KServe 0.21 hard-codes ``0.0.0.0``).
"""

# mypy: ignore-errors
# (kserve and numpy live in the KServe virtualenv, not in the router's)

from __future__ import annotations

import argparse
import sys
import uuid


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("models", nargs="+")
    args = parser.parse_args(argv)

    import kserve
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
    from kserve.protocol.rest import server as rest_server

    class Echo(kserve.Model):  # type: ignore[misc]
        def __init__(self, name: str) -> None:
            super().__init__(name)

        def load(self) -> bool:
            self.ready = True
            return self.ready

        async def predict(
            self,
            payload: InferRequest,
            headers: dict[str, str] | None = None,
            response_headers: dict[str, str] | None = None,
        ) -> InferResponse:
            wanted = {o.name for o in payload.request_outputs or []}
            outputs = []
            for tensor in payload.inputs:
                if wanted and tensor.name not in wanted:
                    continue
                out = InferOutput(name=tensor.name, shape=tensor.shape, datatype=tensor.datatype)
                out.set_data_from_numpy(tensor.as_numpy(), binary_data=False)
                outputs.append(out)
            return InferResponse(
                model_name=self.name,
                infer_outputs=outputs,
                response_id=payload.id or str(uuid.uuid4()),
                use_binary_outputs=payload.use_binary_outputs,
            )

    host = args.host
    original_init = rest_server.RESTServer.__init__

    def loopback_init(self: object, *a: object, **kw: object) -> None:
        original_init(self, *a, **kw)
        self.config.host = host  # type: ignore[attr-defined]

    rest_server.RESTServer.__init__ = loopback_init
    server = kserve.ModelServer(http_port=args.http_port, enable_grpc=False, workers=1)
    models = []
    for name in args.models:
        model = Echo(name)
        model.load()
        models.append(model)
    server.start(models)


if __name__ == "__main__":
    main(sys.argv[1:])
