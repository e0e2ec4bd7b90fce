"""The API keys file: SHA-256 digests of keys, each naming its tenant, the models it may
use and its default priority class. Raw keys are never stored: ``model-router new-key``
prints a fresh key once, with the entry to paste here.

```yaml
keys:
  - name: ci-bot                 # how logs and errors name the key
    sha256: 5e884898da28...      # hex digest of the key
    tenant: acme                 # a tenant of the routing file (or any, with tenants."*")
    models: [chat-small]         # optional: narrows the tenant's models
    default_class: sheddable     # optional: the key's priority class
```
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from extproc.core.gateway.credentials import ApiKey, key_digest

KEY_PREFIX = "mr-"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyEntryConfig(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]
    tenant: Annotated[str, Field(min_length=1, max_length=64)]
    models: tuple[str, ...] | None = None
    default_class: str | None = None


class KeysFile(_Strict):
    keys: tuple[KeyEntryConfig, ...] = ()


def new_key() -> str:
    """A fresh API key: 32 random bytes, URL-safe (no ``.``: it never looks like a JWT)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def entry_for(key: str, *, name: str, tenant: str) -> dict[str, Any]:
    return {"name": name, "sha256": key_digest(key).hex(), "tenant": tenant}


def read_keys(path: Path) -> tuple[list[ApiKey], list[str]]:
    """The keys in ``path`` and the problems found (each naming the entry)."""
    where = f"auth.keys_file ({path})"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return [], [f"{where}: cannot read: {exc.strerror or exc}"]
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return [], [f"{where}: not valid YAML: {exc}"]
    try:
        parsed = KeysFile.model_validate(data if data is not None else {})
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"] if err["type"] != "extra_forbidden" else "unknown key"
            problems.append(f"{where}: {loc}: {msg}")  # never echoes the value (a digest)
        return [], problems
    keys: list[ApiKey] = []
    problems = []
    names: set[str] = set()
    digests: set[bytes] = set()
    for i, k in enumerate(parsed.keys):
        digest = bytes.fromhex(k.sha256.lower())
        if k.name in names:
            problems.append(f"{where}: keys.{i}.name: duplicate key name {k.name!r}")
        if digest in digests:
            problems.append(f"{where}: keys.{i}.sha256: the same digest as another key")
        names.add(k.name)
        digests.add(digest)
        keys.append(
            ApiKey(
                digest=digest,
                name=k.name,
                tenant=k.tenant,
                models=frozenset(k.models) if k.models is not None else None,
                default_class=k.default_class,
            )
        )
    return keys, problems


def key_table(keys: list[ApiKey]) -> Mapping[bytes, ApiKey]:
    return {k.digest: k for k in keys}
