"""Envoy's ext_authz check for natively routed requests: the gateway on the fast path.

Natively routed requests never reach the ext_proc flow, so Envoy asks the router's
``envoy.service.auth.v3.Authorization`` service (one unary call on the same gRPC port,
headers only) before it routes them: the credentials, the caller's right to the model and
the tenant's quotas (:meth:`~extproc.core.gateway.Gateway.native_caller`, then
:meth:`~extproc.core.gateway.Gateway.admit_native`). Requests on
ext_proc routes do not pay this hop: the flow runs the same checks.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc

from extproc.core import envoy_wire
from extproc.core.errors import InternalError, RouterError
from extproc.core.flow import jwt_claim
from extproc.core.gateway import CREDENTIAL_HEADERS
from extproc.core.protocols import error_protocol
from extproc.core.request import RequestHead
from extproc.server.metrics import Metrics
from extproc.server.pump import CurrentState

log = logging.getLogger("extproc.server")


class NativeAuthorizer(authz_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, current: CurrentState, metrics: Metrics, worker: str) -> None:
        self._current = current
        self._metrics = metrics
        self._worker = worker
        self.checks = 0

    def __repr__(self) -> str:
        return f"NativeAuthorizer(worker={self._worker!r}, checks={self.checks})"

    async def Check(
        self,
        request: authz.CheckRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> authz.CheckResponse:
        self.checks += 1
        http = request.attributes.request.http
        headers = dict(http.headers)
        head = RequestHead(method=http.method, path=http.path, headers=headers)
        gateway = self._current.state.gateway
        if gateway is None:  # auth turned off needs a restart; never refuse meanwhile
            return envoy_wire.authz_allowed("", ())
        caller = None
        try:
            claims = jwt_claim(
                request.attributes.metadata_context.filter_metadata, gateway.auth.tenant_claim
            )
            caller = gateway.native_caller(head, claims)
            if caller is not None:
                gateway.admit_native(caller, head)
        except RouterError as err:
            self._metrics.observe_gateway("native", caller.label if caller else None, err)
            log.info(
                "request rejected",
                extra={"request_id": head.request_id[:256], "status": err.status,
                       "error_type": err.type, "reason": err.message, "path": "native"},
            )  # fmt: skip
            return envoy_wire.authz_denied(err, error_protocol(head.path_only))
        except Exception:  # the per-request boundary: log, count, refuse
            log.exception("internal error in the native authorization check")
            self._metrics.internal_errors.inc()
            internal = InternalError("internal router error; see router logs")
            return envoy_wire.authz_denied(internal, error_protocol(head.path_only))
        self._metrics.observe_gateway("native", caller.label if caller else None, None)
        return envoy_wire.authz_allowed(self._worker, CREDENTIAL_HEADERS)
