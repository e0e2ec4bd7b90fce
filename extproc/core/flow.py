"""The per-request state machine: headers -> (body) -> decision -> response. No I/O.

One :class:`RequestFlow` lives for one ext_proc stream (one HTTP request). Feed it
each ``ProcessingRequest`` with :meth:`RequestFlow.receive`; it returns the
``ProcessingResponse`` to send, or ``None`` while it waits for more body chunks.
When it is done, :attr:`RequestFlow.outcome` says what happened (for metrics and
logs). The gRPC servicer is only a pump around this; ``model-router explain``
drives the very same class with synthesized messages.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2 as core
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import struct_pb2

from extproc.core import answers, envoy_wire
from extproc.core.admission import PriorityClass
from extproc.core.envoy_wire import ResponseCache
from extproc.core.errors import (
    BodyTooLarge,
    InvalidBody,
    NoHealthyDeployment,
    RouterError,
    Shed,
    TooManyHeaders,
)
from extproc.core.gateway import JWT_NAMESPACE, JWT_PAYLOAD_KEY, Caller, Gateway
from extproc.core.protocols import (
    NeedsBody,
    RequestHead,
    ServerCall,
    error_protocol,
    understand_body,
    understand_head,
)
from extproc.core.protocols.json_body import declared_length
from extproc.core.request import InferenceRequest
from extproc.core.rewrite import Rewrite, for_upstream
from extproc.core.rules.ruleset import RuleMatch, RuleSet
from extproc.core.scheduling.profile import ScheduleTrace
from extproc.core.scheduling.scheduler import Decision, Scheduler
from extproc.core.signals import SignalBoard
from extproc.core.snapshot import Snapshot
from extproc.core.specs.check import CompiledSpec


@dataclass(frozen=True, slots=True)
class RouterState:
    """Everything one request reads, captured once when its stream opens.

    Built by :func:`extproc.control.compile.router_state` from the compiled routing
    file and one registry snapshot; a reload or a registry change builds a new one and
    swaps it in, and streams already open finish on the state they started with.
    """

    snapshot: Snapshot | None
    """The registry's view; ``None`` until it has synced (requests then get a 503)."""
    scheduler: Scheduler
    specs: Mapping[str, CompiledSpec]
    ruleset: RuleSet
    max_body_bytes: int
    max_json_depth: int
    signals: SignalBoard = field(default_factory=SignalBoard, compare=False)
    """Live load, latency and in-flight counts (the same board across states)."""
    max_request_headers: int = 100
    """Envoy's header-count limit (``limits.max_request_headers``): a request whose
    headers and the router's own would exceed it is answered 431 here (Envoy would
    refuse the router's answer with an empty 500)."""
    responses: ResponseCache = field(default_factory=ResponseCache, compare=False)
    gateway: Gateway | None = None
    """Authentication and tenant quotas (README "Gateway"); ``None``: open to anyone."""

    def __repr__(self) -> str:
        return (
            f"RouterState(snapshot={self.snapshot!r}, scheduler={self.scheduler!r}, "
            f"specs={sorted(self.specs)}, rules={list(self.ruleset.names)}, "
            f"max_body_bytes={self.max_body_bytes}, {self.responses!r})"
        )


class Phase(enum.Enum):
    HEADERS = "headers"
    BODY = "body"
    DONE = "done"


@dataclass(slots=True)
class Outcome:
    """What happened to one request."""

    request: InferenceRequest | None = None
    decision: Decision | None = None
    error: RouterError | None = None
    body_bytes: int = 0
    used_body: bool = False
    registered: str | None = None
    """The request's model once known to be registered (a safe metric label)."""
    checks: list[str] = field(default_factory=list)
    """Spec checks that ran (for ``explain``)."""
    rule: RuleMatch | None = None
    """The content rule that applied, if any."""
    rewrite: Rewrite | None = None
    priority: str | None = None
    """The request's priority class, once read (admission)."""
    answered: str | None = None
    """The server endpoint the router answered itself (``kserve_server_ready``...)."""
    passed: bool = False
    """Let through unchecked (shed under load with ``failure_mode: open``)."""
    tenant: str | None = None
    """The caller's tenant as a metric label (configured names, or ``__other__``)."""
    credential: str | None = None
    """Which credential authenticated it (``API key 'ci'``, ``JWT``): never key material."""

    @property
    def status(self) -> int:
        return 0 if self.error is None else self.error.status

    @property
    def model(self) -> str | None:
        """The model name, only when it is registered (safe as a metric label)."""
        if self.decision is not None:
            return self.decision.model
        return self.registered


def parse_head(msg: ep.HttpHeaders) -> RequestHead:
    """Headers as Envoy sends them (values in ``raw_value``), pseudo-headers split out."""
    entries = msg.headers.headers
    try:  # the common case, in one comprehension: lower-case names, UTF-8 raw values
        headers = {h.key: h.raw_value.decode() for h in entries}
    except UnicodeDecodeError:
        headers = _merge_headers(entries)
    else:
        lower = "".join(headers).islower()
        if len(headers) != len(entries) or "" in headers.values() or not lower:
            headers = _merge_headers(entries)  # repeats, ``value`` fields or upper case
    return RequestHead(
        method=headers.get(":method", ""), path=headers.get(":path", "/"), headers=headers
    )


def _merge_headers(entries: Iterable[core.HeaderValue]) -> dict[str, str]:
    """Names lower-cased, repeated headers joined with commas (RFC 9110 5.3),
    ``raw_value`` preferred over ``value``, invalid UTF-8 replaced."""
    headers: dict[str, str] = {}
    for h in entries:
        value = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
        key = h.key.lower()
        seen = headers.get(key)
        headers[key] = value if seen is None else f"{seen},{value}"
    return headers


def jwt_claim(
    metadata: Mapping[str, struct_pb2.Struct], claim: str | None
) -> dict[str, str] | None:
    """``{claim: value}`` from the JWT payload Envoy's ``jwt_authn`` verified and
    forwarded as metadata (``None``: no verified JWT, or no claim configured)."""
    if claim is None or JWT_NAMESPACE not in metadata:
        return None
    payload = metadata[JWT_NAMESPACE].fields.get(JWT_PAYLOAD_KEY)
    if payload is None:
        return None
    value = payload.struct_value.fields.get(claim)
    return {claim: value.string_value if value is not None else ""}


def subset_hint(msg: ep.ProcessingRequest) -> Sequence[str] | None:
    """The proxy's candidate subset (endpoint picker protocol), if it sent one."""
    fm = msg.metadata_context.filter_metadata
    if envoy_wire.SUBSET_NAMESPACE not in fm:
        return None
    field = fm[envoy_wire.SUBSET_NAMESPACE].fields.get(envoy_wire.SUBSET_KEY)
    if field is None:
        return None
    return [v.string_value for v in field.list_value.values]


class RequestFlow:
    __slots__ = ("_body", "_body_len", "_budget", "_caller", "_head", "_need", "_priority",
                 "_state", "_subset", "_trace", "outcome", "phase")  # fmt: skip

    def __init__(self, state: RouterState, trace: ScheduleTrace | None = None) -> None:
        self._state = state
        self._trace = trace
        self.phase = Phase.HEADERS
        self.outcome = Outcome()
        self._head: RequestHead | None = None
        self._need: NeedsBody | None = None
        self._subset: Sequence[str] | None = None
        self._body: list[bytes] = []
        self._body_len = 0
        self._priority: PriorityClass | None = None
        self._budget: float | None = None
        self._caller: Caller | None = None

    def __repr__(self) -> str:
        rid = self._head.request_id if self._head else ""
        return f"RequestFlow(phase={self.phase.value}, request_id={rid!r}, body={self._body_len}B)"

    @property
    def head(self) -> RequestHead | None:
        return self._head

    def receive(self, msg: ep.ProcessingRequest) -> ep.ProcessingResponse | None:
        kind = msg.WhichOneof("request")
        try:
            if kind == "request_headers" and self.phase is Phase.HEADERS:
                return self._on_headers(msg)
            if kind == "request_body" and self.phase is Phase.BODY:
                return self._on_body(msg.request_body)
        except RouterError as err:
            return self._fail(err)
        # Anything else (trailers, response phases, a body we did not ask for) passes.
        return envoy_wire.passthrough(kind or "request_headers")

    def let_pass(self) -> ep.ProcessingResponse:
        """Let the request continue unchecked on the route Envoy matched (the router
        sheds it; with ``failure_mode: open`` that is the model's own fail-open route)."""
        self.phase = Phase.DONE
        self.outcome.passed = True
        return envoy_wire.continue_unchecked()

    def fail(self, err: RouterError) -> ep.ProcessingResponse:
        """Answer with ``err`` (used by the pump for unexpected failures too)."""
        return self._fail(err)

    def _fail(self, err: RouterError) -> ep.ProcessingResponse:
        self.phase = Phase.DONE
        self.outcome.error = err
        protocol = error_protocol(self._head.path_only) if self._head is not None else "generic"
        return envoy_wire.immediate(err, protocol)

    def _answer(self, call: ServerCall) -> ep.ProcessingResponse:
        """A server endpoint the router answers itself, from the current snapshot."""
        body = answers.answer(call, self._state.snapshot)
        self.outcome.answered = call.endpoint
        if call.model is not None:
            self.outcome.registered = call.model
        self.phase = Phase.DONE
        return envoy_wire.answer(body)

    def _snapshot(self) -> Snapshot:
        snapshot = self._state.snapshot
        if snapshot is None:
            raise NoHealthyDeployment("the model registry has not synced yet")
        return snapshot

    def _known(self, request: InferenceRequest) -> None:
        """404 for an unknown model or version, before any spec check (status order)."""
        self.outcome.request = request
        self._state.scheduler.lookup(request, self._snapshot())
        self.outcome.registered = request.model

    def _decide(self, request: InferenceRequest) -> Decision:
        self.outcome.request = request
        state = self._state
        snapshot = self._snapshot()
        request_id = request.head.request_id
        try:
            decision = state.scheduler.schedule(
                request, snapshot, self._subset, self._trace, state.signals,
                self._priority, self._budget,
            )  # fmt: skip
            if self._caller is not None and self._trace is None:  # explain counts nothing
                assert state.gateway is not None
                state.gateway.admit(self._caller, request, request_id)
        except (Shed, NoHealthyDeployment):
            self.outcome.registered = request.model  # shed or unservable, but registered
            raise
        self.outcome.decision = decision
        self.phase = Phase.DONE
        if request_id and self._trace is None:  # explain changes no live state
            # released when Envoy's access log reports the request ended
            state.signals.inflight.acquire(decision.endpoints[0], request_id)
        return decision

    def _on_headers(self, msg: ep.ProcessingRequest) -> ep.ProcessingResponse:
        headers = msg.request_headers
        head = self._head = parse_head(headers)
        count = len(headers.headers.headers)
        limit = self._state.max_request_headers
        if count + envoy_wire.ROUTER_HEADER_ROOM > limit:
            room = limit - envoy_wire.ROUTER_HEADER_ROOM
            raise TooManyHeaders(
                f"the request has {count} headers (with Envoy's own); at most {room} fit "
                f"in the limit of {limit} (limits.max_request_headers) beside the "
                f"{envoy_wire.ROUTER_HEADER_ROOM} the router adds"
            )
        self._subset = subset_hint(msg)
        gateway = self._state.gateway
        if gateway is not None and gateway.needs_credentials(head.path_only):
            claims = jwt_claim(msg.metadata_context.filter_metadata, gateway.auth.tenant_claim)
            caller = self._caller = gateway.caller(head.headers, claims)  # 401
            self.outcome.tenant = caller.label
            self.outcome.credential = caller.credential
        understood = understand_head(head)
        if isinstance(understood, ServerCall):
            return self._answer(understood)
        adm = self._state.scheduler.admission
        if adm is not None:  # 400 for a bad priority or budget header, before the body
            tenant_class = self._caller.default_class if self._caller is not None else None
            self._priority = adm.classify(head, tenant_class)
            self.outcome.priority = self._priority.name
            self._budget = adm.header_budget(head)
        if isinstance(understood, InferenceRequest):
            if self._caller is not None:
                self._caller.check_model(understood.model)  # 403
            if not self._reads_body(understood):
                final = self._apply_rules(understood)
                decision = self._decide(final)
                return self._state.responses.on_headers(decision, self.outcome.rewrite)
            self._known(understood)  # KServe: 404 from the path before reading the body
            understood = NeedsBody("kserve_v2", understood.capabilities, request=understood)
        limit = self._state.max_body_bytes
        length = declared_length(head)
        if length is not None and length > limit:
            raise BodyTooLarge(f"body of {length} bytes is over the {limit}-byte limit")
        if headers.end_of_stream:
            raise InvalidBody("request body is empty; a JSON object is required")
        self._need = understood
        self.phase = Phase.BODY
        return envoy_wire.continue_headers()

    def _on_body(self, body: ep.HttpBody) -> ep.ProcessingResponse | None:
        chunk = body.body
        self._body_len += len(chunk)
        limit = self._state.max_body_bytes
        if self._body_len > limit:
            self._body.clear()
            raise BodyTooLarge(f"body is over the {limit}-byte limit")
        if chunk:
            self._body.append(chunk)
        if not body.end_of_stream:
            return None  # streamed chunks: keep accumulating
        raw = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body.clear()
        self.outcome.body_bytes = self._body_len
        self.outcome.used_body = True
        assert self._head is not None and self._need is not None
        depth = self._state.max_json_depth
        understood = understand_body(self._head, self._need, raw, limit, max_depth=depth)
        if self._caller is not None and self._need.request is None:  # KServe: checked on headers
            self._caller.check_model(understood.model)  # 403
        request = self._apply_rules(understood)
        self._known(request)
        spec = self._spec_for(request)
        if spec is not None:
            self.outcome.checks = spec.check(request.body, request.protocol, self._head.path_only)
        return self._state.responses.on_body(self._decide(request), self.outcome.rewrite)

    def _apply_rules(self, request: InferenceRequest) -> InferenceRequest:
        """The first matching content rule may change model, version and capabilities."""
        rules = self._state.ruleset
        match = rules.evaluate(request) if rules else None
        if match is None:
            return request
        final = match.apply(request)
        self.outcome.rule = match
        self.outcome.rewrite = for_upstream(request, final)
        return final

    def _reads_body(self, request: InferenceRequest) -> bool:
        """A KServe infer call whose model has a spec, or that a content rule may route
        on its body: read it. Everything else identified on headers keeps the fast path
        (the body is never sent to the router), KServe health and metadata calls
        included: they have no body to read."""
        if request.protocol != "kserve_v2":
            return False
        head = request.head
        if head.method != "POST" or not head.path_only.endswith("/infer"):
            return False
        if self._spec_for(request) is not None:
            return True
        rules = self._state.ruleset
        return bool(rules) and rules.needs_body_for(request)

    def _spec_for(self, request: InferenceRequest) -> CompiledSpec | None:
        """The model's spec: the one its registry entry names, else its own."""
        specs = self._state.specs
        if not specs:
            return None
        snapshot = self._state.snapshot
        if snapshot is not None:
            entry = snapshot.models.get(request.model)
            if entry is not None and entry.spec is not None:
                return specs.get(entry.spec)
        return specs.get(request.model)
