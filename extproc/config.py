"""The routing file: one typed, validated configuration, loaded once.

The file is YAML. It is validated completely (every problem reported with the
path of the offending key and its line), then frozen. A reload builds a new
``Config`` and swaps it in atomically; a file that does not validate never
replaces a good one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from extproc.errors import ConfigError
from extproc.rules import RulesError, RuleSet
from extproc.specs import SpecError
from extproc.validation import CompiledSpec, parse_specs

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
_HOSTPORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})$"
)
_TAG_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class FailureMode(StrEnum):
    """What Envoy does when the router cannot answer (down, timeout)."""

    OPEN = "open"
    CLOSED = "closed"


class Protocol(StrEnum):
    OPENAI = "openai"
    KSERVE_V2 = "kserve_v2"
    GENERIC = "generic"


class ListenerConfig(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 50051
    """gRPC port of worker 0; worker *i* listens on ``port + i``."""
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9464
    """Prometheus port of worker 0 (worker *i*: ``metrics_port + i``); 0 disables."""
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    grace_period_s: Annotated[float, Field(ge=0, le=600)] = 10.0
    """On SIGTERM: how long open streams may take to finish."""
    pin_cpu: bool = False
    """Pin worker *i* to CPU *i* (mod CPUs): keeps grpc.aio's thread hand-offs on one core
    (measured: ~20% less router CPU per request at moderate load on 2 cores)."""
    drain_delay_s: Annotated[float, Field(ge=0, le=600)] = 0.0
    """On SIGTERM: how long to report NOT_SERVING, still serving, before stopping, so
    health checkers (Envoy's ext_proc cluster checks every 2 s) move traffic first."""


class EnvoyConfig(_Strict):
    """Settings used when the router renders Envoy's bootstrap (``model-router up``)."""

    listen_host: str = "127.0.0.1"
    listen_port: Annotated[int, Field(ge=1, le=65535)] = 10000
    admin_port: Annotated[int, Field(ge=1, le=65535)] = 9901
    message_timeout_ms: Annotated[int, Field(ge=1, le=60000)] = 1000
    route_timeout_s: Annotated[int, Field(ge=1, le=86400)] = 600
    stream_idle_timeout_s: Annotated[int, Field(ge=1, le=86400)] = 300


class LimitsConfig(_Strict):
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = DEFAULT_MAX_BODY_BYTES
    """Largest request body (bytes on the wire, and inflated size of a gzip body)."""
    max_json_depth: Annotated[int, Field(ge=8, le=1000)] = 512
    """Deepest JSON nesting accepted in a body (deeper is a 400)."""


class ConsulConfig(_Strict):
    """Consul connection and mapping. Unset fields fall back to Consul's own environment
    variables (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE,
    CONSUL_HTTP_SSL, CONSUL_HTTP_SSL_VERIFY, CONSUL_CACERT, CONSUL_CLIENT_CERT,
    CONSUL_CLIENT_KEY, CONSUL_DATACENTER), then to Consul's defaults."""

    address: str | None = None
    token: str | None = None
    datacenter: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_verify: bool | None = None
    service_tag: Annotated[str, Field(min_length=1)] = "model-router"
    """Only services carrying this tag are model deployments."""
    routable_states: tuple[Literal["passing", "warning"], ...] = ("passing",)
    """Health states that may receive traffic; add ``warning`` to route to warning instances."""
    wait_s: Annotated[int, Field(ge=1, le=600)] = 30
    """Blocking-query wait: Consul answers at once on change, else after this long."""
    startup_timeout_s: Annotated[float, Field(ge=0, le=600)] = 10.0
    fallback_to_file: bool = False
    """Consul unreachable at start-up: route on this file's ``deployments`` meanwhile
    (otherwise stay NOT_SERVING until Consul answers)."""


class RegistryConfig(_Strict):
    type: Literal["static", "consul"] = "static"
    consul: ConsulConfig = ConsulConfig()


class SchedulingConfig(_Strict):
    """Which picker chooses among candidate endpoints, and how many fallbacks follow it."""

    picker: str = "round_robin"
    max_fallbacks: Annotated[int, Field(ge=0, le=16)] = 2

    @field_validator("picker")
    @classmethod
    def _known_picker(cls, value: str) -> str:
        from extproc.policies import PICKERS

        if value not in PICKERS:
            raise ValueError(f"unknown picker {value!r}; known: {', '.join(sorted(PICKERS))}")
        return value


class FailOpenConfig(_Strict):
    """Where Envoy sends OpenAI-path requests when the router is down and mode is open.

    Envoy cannot read the body's ``model`` then; it routes on ``x-model`` or the KServe
    path, and otherwise to the model named here for each OpenAI path.
    """

    chat_model: str | None = None
    completions_model: str | None = None
    embeddings_model: str | None = None


class ModelConfig(_Strict):
    protocol: Protocol
    versions: Annotated[tuple[str, ...], Field(min_length=1)]
    scheduling: SchedulingConfig | None = None
    spec: Mapping[str, Any] | None = None
    """Inline model spec: ``{openai: {...}}`` or ``{kserve_v2: {...}}`` (see README)."""

    @field_validator("versions", mode="before")
    @classmethod
    def _versions_as_strings(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            out = []
            for v in value:
                if isinstance(v, bool) or not isinstance(v, str | int):
                    raise ValueError("each version must be a string (or an integer)")
                out.append(str(v))
            if len(set(out)) != len(out):
                raise ValueError("versions must be unique")
            return tuple(out)
        return value


class Endpoint(_Strict):
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


class DeploymentConfig(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=253)]
    model: str
    version: str
    endpoints: Annotated[tuple[Endpoint, ...], Field(min_length=1)]
    weight: Annotated[int, Field(ge=0, le=10000)] = 1
    tags: Mapping[str, str] = Field(default_factory=dict)
    enabled: bool = True

    @field_validator("version", mode="before")
    @classmethod
    def _version_str(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("endpoints", mode="before")
    @classmethod
    def _parse_endpoints(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        out: list[Any] = []
        for item in value:
            if not isinstance(item, str):
                out.append(item)
                continue
            m = _HOSTPORT.match(item.strip())
            if m is None or not 1 <= int(m["port"]) <= 65535:
                raise ValueError(f"endpoint {item!r} is not host:port (IPv6 as [addr]:port)")
            out.append({"host": m["v6"] or m["host"], "port": int(m["port"])})
        return out

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            for k in value:
                if not isinstance(k, str) or not _TAG_KEY.match(k):
                    raise ValueError(f"tag key {k!r} must match {_TAG_KEY.pattern}")
            return {k: str(v) for k, v in value.items()}
        return value


class Config(_Strict):
    """The whole routing file."""

    listener: ListenerConfig = ListenerConfig()
    envoy: EnvoyConfig = EnvoyConfig()
    failure_mode: FailureMode = FailureMode.CLOSED
    fail_open: FailOpenConfig = FailOpenConfig()
    limits: LimitsConfig = LimitsConfig()
    registry: RegistryConfig = RegistryConfig()
    scheduling: SchedulingConfig = SchedulingConfig()
    spec_files: tuple[str, ...] = ()
    """Files of model specs in the neutral form (model name -> spec), JSON or YAML,
    relative to the routing file."""
    models: Mapping[str, ModelConfig] = Field(default_factory=dict)
    deployments: tuple[DeploymentConfig, ...] = ()
    tenant_header: str = "x-tenant-id"
    """The header content rules read as ``tenant``."""
    rules: tuple[Any, ...] = ()
    """Content rules, evaluated in order; the first that matches applies (docs/rules.md)."""
    _specs: dict[str, CompiledSpec] = PrivateAttr(default_factory=dict)
    _rules: RuleSet | None = PrivateAttr(default=None)

    @property
    def ruleset(self) -> RuleSet:
        """The compiled content rules."""
        if self._rules is None:
            self._rules = RuleSet.parse(list(self.rules), tenant_header=self.tenant_header)
        return self._rules

    @property
    def specs(self) -> Mapping[str, CompiledSpec]:
        """Compiled specs by model (only models that declare one)."""
        return self._specs

    @model_validator(mode="after")
    def _cross_check(self) -> Config:
        problems: list[str] = []
        if not self.models:
            problems.append("models: declare at least one model")
        seen: set[str] = set()
        for i, dep in enumerate(self.deployments):
            where = f"deployments[{i}]"
            if dep.name in seen:
                problems.append(f"{where}.name: duplicate deployment name {dep.name!r}")
            seen.add(dep.name)
            model = self.models.get(dep.model)
            if model is None:
                problems.append(f"{where}.model: {dep.model!r} is not declared under models")
            elif dep.version not in model.versions:
                problems.append(
                    f"{where}.version: {dep.version!r} is not one of model "
                    f"{dep.model!r} versions {list(model.versions)}"
                )
        fo = self.fail_open
        for key in ("chat_model", "completions_model", "embeddings_model"):
            name = getattr(fo, key)
            if name is not None and name not in self.models:
                problems.append(f"fail_open.{key}: {name!r} is not declared under models")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def worker_ports(self) -> list[int]:
        return [self.listener.port + i for i in range(self.listener.workers)]

    def deployments_of(self, model: str) -> list[DeploymentConfig]:
        return [d for d in self.deployments if d.model == model]


# ---------------------------------------------------------------------------
# Loading with precise errors


def _yaml_line(root: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """Best-effort 1-based line of the YAML node at ``loc``."""
    node = root
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, val in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    nxt = val
                    line = key.start_mark.line + 1
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
            if node is not None:
                line = node.start_mark.line + 1
        else:
            break
        if node is None:
            break
    return line


def _fmt_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate routing-file text; raise :class:`ConfigError` with every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["<root>: the routing file must be a mapping"])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
            # Pydantic tags union members in loc; drop type names it inserts.
            loc = [p for p in loc if p not in ("str", "int", "list[...]", "tuple[...]")]
            msg = err["msg"].removeprefix("Value error, ")
            if not loc:  # cross-checks: each line already names its key path
                problems.extend(msg.splitlines())
                continue
            line = _yaml_line(root, loc)
            where = f"line {line}: " if line else ""
            problems.append(f"{where}{_fmt_loc(loc)}: {msg}")
        raise ConfigError(source, problems) from exc
    config._specs = _load_specs(config, source)
    try:
        config._rules = RuleSet.parse(list(config.rules), tenant_header=config.tenant_header)
    except RulesError as exc:
        raise ConfigError(source, exc.problems) from exc
    unknown = sorted(config._rules.target_models() - set(config.models))
    if unknown:
        raise ConfigError(source, [f"rules: route to undeclared model(s) {', '.join(unknown)}"])
    return config


def _load_specs(config: Config, source: str) -> dict[str, CompiledSpec]:
    """Inline and file specs, compiled once; every problem names its file and key."""
    base = Path(source).parent if source and not source.startswith("<") else Path.cwd()
    raw: dict[str, Any] = {}
    where: dict[str, str] = {}
    problems: list[str] = []
    for i, name in enumerate(config.spec_files):
        path = base / name
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            problems.append(f"spec_files[{i}]: cannot read {path}: {exc}")
            continue
        if not isinstance(data, dict):
            problems.append(f"spec_files[{i}]: {path} must map model names to specs")
            continue
        for model, spec in data.items():
            # Specs of models this file does not declare stay usable by reference
            # (Consul ServiceMeta ``spec``).
            raw[model], where[model] = spec, f"{name}#"
    for model, m in config.models.items():
        if m.spec is not None:
            if model in raw:
                problems.append(f"models.{model}.spec: also given in {where[model]}")
            raw[model] = {"protocol": m.protocol.value, "versions": list(m.versions), **m.spec}
            where[model] = f"models.{model}.spec#"
    specs: dict[str, CompiledSpec] = {}
    for model, spec in raw.items():
        try:
            specs.update(parse_specs({model: spec}, where=where[model]))
        except SpecError as exc:
            problems.extend(exc.problems)
            continue
        declared = config.models[model].protocol.value if model in config.models else None
        if declared is not None and specs[model].protocol != declared:
            problems.append(f"{where[model]}/{model}/protocol: is not the model's {declared!r}")
    if problems:
        raise ConfigError(source, problems)
    return specs


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), [f"not UTF-8: {exc}"]) from exc
    return parse_config(text, str(p))
