"""Domain errors raised while understanding and routing a request.

Every error a client can cause is a :class:`RouterError` carrying its HTTP status,
a stable machine-readable ``type``, a human message and, where the problem is about
one JSON value, ``field`` as a JSON Pointer into the decoded body, or, where it is about
one request header, ``header`` (its lower-case name). ``envoy_wire.py`` is the single
place that turns them into Envoy ``ImmediateResponse`` messages, in the error shape of
the request path's protocol (:mod:`extproc.core.error_shapes`).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_MESSAGE_CHARS = 1024
"""The longest message (and ``field``) a client gets back or a log line carries: client
input echoed in it (a model name, a header value, a JSON key) is bounded first by
:func:`shown`, and the whole message by this."""
SHOWN_CHARS = 64


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` of client input for an error message, bounded: a 50 KB header value
    shows its first ``limit`` characters and how many more there were."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text) - limit} more characters)"


def _bounded(text: str) -> str:
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[: MAX_MESSAGE_CHARS - 40] + f"... ({len(text) - MAX_MESSAGE_CHARS + 40} more)"


class RouterError(Exception):
    """Base class: a request that cannot be routed, with the status to answer."""

    status: int = 500
    type: str = "internal_error"

    def __init__(
        self, message: str, *, field: str | None = None, header: str | None = None
    ) -> None:
        message = _bounded(message)
        super().__init__(message)
        self.message = message
        self.field = _bounded(field) if field is not None else None
        self.header = header
        """The request header the problem is about (``content-type``, ``x-model``...)."""

    def __repr__(self) -> str:
        header = f", header={self.header!r}" if self.header else ""
        return (
            f"{type(self).__name__}(status={self.status}, type={self.type!r}, "
            f"message={self.message!r}, field={self.field!r}{header})"
        )


class MethodNotAllowed(RouterError):
    status = 405
    type = "method_not_allowed"


class UnsupportedMediaType(RouterError):
    status = 415
    type = "unsupported_media_type"


class BodyTooLarge(RouterError):
    status = 413
    type = "body_too_large"


class InvalidBody(RouterError):
    """The body cannot be read as one JSON object (empty, malformed, not UTF-8...)."""

    status = 400
    type = "invalid_body"


class InvalidRequest(RouterError):
    """The body parses but is not a well-formed request for its protocol."""

    status = 400
    type = "invalid_request"


class ModelNotFound(RouterError):
    status = 404
    type = "model_not_found"


class VersionNotFound(RouterError):
    status = 404
    type = "version_not_found"


class SpecViolation(RouterError):
    """Well-formed, but breaks the model's registered spec."""

    status = 422
    type = "spec_violation"

    def __init__(self, message: str, *, field: str | None = None, rule: str = "spec") -> None:
        super().__init__(message, field=field)
        self.rule = rule
        """Which spec rule was broken (``max_tokens``, ``json_schema``, ``tensor_shape``...)."""


class UnsupportedEndpoint(RouterError):
    """A path of a protocol the router knows but does not serve (KServe v2 repository,
    shared memory, server-level logging and trace settings)."""

    status = 404
    type = "unsupported_endpoint"


class TooManyHeaders(RouterError):
    """More request headers than Envoy's limit leaves room for (the router's own too)."""

    status = 431
    type = "request_headers_too_large"


class NoHealthyDeployment(RouterError):
    status = 503
    type = "no_healthy_deployment"


class RouterUnavailable(RouterError):
    """Envoy's answer when the router did not answer (routes' catch-alls in fail-open mode;
    Envoy's local replies say the same): never raised by the router itself."""

    status = 503
    type = "router_unavailable"


class Shed(RouterError):
    """Admission refused the request (README "Admission"): the client should retry after
    ``retry_after_s`` seconds (the ``Retry-After`` header)."""

    def __init__(
        self, message: str, *, retry_after_s: int | None = None, reason: str = "load"
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.reason = reason
        """Why: ``load``, ``quota`` or ``budget`` (the label of the admission counter)."""


class Overloaded(Shed):
    """Shed under load or over a quota (endpoint picker protocol: 429)."""

    status = 429
    type = "overloaded"


class BudgetUnmet(Shed):
    """No endpoint can meet the request's latency budget and the policy is ``reject_503``."""

    status = 503
    type = "latency_budget_unmet"


class Unauthenticated(RouterError):
    """No credentials, or credentials that are not valid (README "Gateway"): 401 with
    ``WWW-Authenticate`` (RFC 6750's ``Bearer``; ``error="invalid_token"`` when a
    credential was sent but is not valid)."""

    status = 401
    type = "unauthenticated"

    def __init__(self, message: str, *, realm: str = "model-router", sent: bool = False) -> None:
        super().__init__(message)
        self.challenge = f'Bearer realm="{realm}"' + (', error="invalid_token"' if sent else "")
        """The ``WWW-Authenticate`` value."""


class ModelNotAllowed(RouterError):
    """The caller's key or tenant may not use the requested model: 403."""

    status = 403
    type = "model_not_allowed"


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """One OpenAI-style ``x-ratelimit-*`` trio (``kind``: ``requests`` or ``tokens``)."""

    kind: str
    limit: int
    remaining: int
    reset_s: float


class QuotaExceeded(Shed):
    """Over a tenant's quota (requests or tokens per minute, concurrent requests): 429
    with ``Retry-After`` and OpenAI's ``x-ratelimit-*`` headers."""

    status = 429
    type = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: int,
        limits: tuple[RateLimitState, ...] = (),
        quota: str = "requests_per_minute",
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s, reason="tenant_quota")
        self.limits = limits
        self.quota = quota
        """Which limit refused it (``requests_per_minute``, ``tokens_per_minute``,
        ``concurrent_requests``)."""


class QuotaUnavailable(Shed):
    """The shared quota store (Redis) is unreachable and ``on_store_error: closed``."""

    status = 503
    type = "quota_unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, retry_after_s=retry_after_s, reason="quota_unavailable")


class InternalError(RouterError):
    """A bug or unexpected failure inside the router (never the client's fault)."""

    status = 500
    type = "internal_error"
