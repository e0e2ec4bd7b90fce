"""gRPC health for Envoy's ext_proc cluster checks and load balancers.

``liveness`` is SERVING while the process runs; ``""``, ``readiness`` and the ext_proc
service name are SERVING once the registry has synced. Shutdown turns every service
NOT_SERVING first (grpc_health's ``enter_graceful_shutdown``), then the server drains.
"""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2

EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
HEALTH_SERVICES = ("", "liveness", "readiness", EXT_PROC_SERVICE)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthReporter:
    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()
        self.ready = False

    def __repr__(self) -> str:
        return f"HealthReporter(ready={self.ready})"

    async def set_ready(self, ready: bool) -> None:
        self.ready = ready
        for svc in HEALTH_SERVICES:
            await self.servicer.set(svc, _SERVING if svc == "liveness" or ready else _NOT_SERVING)

    async def shutdown(self) -> None:
        """NOT_SERVING for every service, and no later change (graceful shutdown)."""
        self.ready = False
        await self.servicer.enter_graceful_shutdown()
