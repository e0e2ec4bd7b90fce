"""Where deployments come from: the routing file itself or Consul."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from extproc.control.schema.base import (
    Strict,
)


class ConsulConfig(Strict):
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
    recovery_grace_s: Annotated[float, Field(ge=0, le=600)] = 10.0
    """After Consul answers again following an outage, a model version its answers leave
    with no routable instance keeps its last known instances this long (0: never)."""
    fallback_to_file: bool = False
    """Consul unreachable at start-up: route on this file's ``deployments`` meanwhile
    (otherwise stay NOT_SERVING until Consul answers)."""


class RegistryConfig(Strict):
    type: Literal["static", "consul"] = "static"
    consul: ConsulConfig = ConsulConfig()
