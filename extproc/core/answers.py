"""What the router answers itself, from the registry snapshot: KServe v2 server health
and metadata, and the model lists of both protocols.

A client pointed at the router sees one server: ``tritonclient``'s
``is_server_live()``/``is_server_ready()``/``get_server_metadata()`` and the OpenAI
SDK's ``models.list()``/``models.retrieve()`` work against it. Errors (a model not
listed, nothing routable yet) are :class:`~extproc.core.errors.RouterError`s like any
other, in the path's error shape.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc import __version__
from extproc.core.errors import ModelNotFound, NoHealthyDeployment
from extproc.core.protocols import ServerCall
from extproc.core.protocols.kserve_v2 import EXTENSIONS
from extproc.core.snapshot import ModelEntry, Snapshot

SERVER_NAME = "model-router"
OWNED_BY = "model-router"


def routable(model: ModelEntry) -> bool:
    """At least one deployment of ``model`` may receive traffic."""
    return any(d.routable for d in model.deployments)


def _listed(snapshot: Snapshot, protocol: str) -> list[ModelEntry]:
    return sorted(
        (m for m in snapshot.models.values() if m.protocol == protocol and routable(m)),
        key=lambda m: m.name,
    )


def _openai_model(model: ModelEntry) -> dict[str, Any]:
    # OpenAI's Model object; ``created`` is unknown to the router (0, as a constant).
    return {"id": model.name, "object": "model", "created": 0, "owned_by": OWNED_BY}


def answer(call: ServerCall, snapshot: Snapshot | None) -> bytes:
    """The JSON body of a 200 answer to ``call``; a ``RouterError`` when there is none.

    ``snapshot`` is ``None`` until the registry has synced: the router is live then,
    but not ready, and lists nothing.
    """
    endpoint = call.endpoint
    if endpoint == "kserve_server_live":
        return orjson.dumps({"live": True})
    if endpoint == "kserve_server_metadata":
        return orjson.dumps(
            {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}
        )
    if snapshot is None:
        raise NoHealthyDeployment("the model registry has not synced yet")
    if endpoint == "kserve_server_ready":
        if not any(routable(m) for m in snapshot.models.values()):
            raise NoHealthyDeployment("not ready: no model has a routable deployment")
        return orjson.dumps({"ready": True})
    if endpoint == "kserve_models":
        return orjson.dumps({"models": [m.name for m in _listed(snapshot, "kserve_v2")]})
    if endpoint == "openai_models":
        data = [_openai_model(m) for m in _listed(snapshot, "openai")]
        return orjson.dumps({"object": "list", "data": data})
    model = snapshot.models.get(call.model or "")
    if model is None or model.protocol != "openai" or not routable(model):
        raise ModelNotFound(
            f"model {call.model!r} is not served here (GET /v1/models lists the OpenAI "
            "models with a routable deployment)"
        )
    return orjson.dumps(_openai_model(model))
