"""KServe v2 / Open Inference Protocol (Triton): model and version come from the path.

:func:`check_request` is the protocol's own well-formedness of an infer body
(400), the same for every model; model specs (422) are :mod:`extproc.core.specs.check`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import unquote

from extproc.core.capabilities import Requirements
from extproc.core.errors import InvalidRequest, UnsupportedEndpoint, shown
from extproc.core.request import InferenceRequest, RequestHead

OPERATIONS = (
    "/infer",
    "/ready",
    "/config",
    "/stats",
    "/trace/setting",
    "/generate_stream",
    "/generate",
)
"""Model-level operations (KServe v2 and Triton's extensions), recognised at the end of
the path; what is left before them (and before ``/versions/{v}``) is the model name."""
POST_OPERATIONS = frozenset({"/infer", "/generate", "/generate_stream"})
"""Inference operations: POST only (405 otherwise)."""
MODELS_PREFIX = "/v2/models/"
_VERSIONS = "/versions/"


class KServePath(NamedTuple):
    """``/v2/models/{name}[/versions/{version}][{op}]``, still percent-encoded."""

    name: str
    version: str | None
    op: str | None


SERVER_PATHS = {
    "/v2": "kserve_server_metadata",
    "/v2/health/live": "kserve_server_live",
    "/v2/health/ready": "kserve_server_ready",
    "/v2/models": "kserve_models",
}
"""Server-level endpoints the router answers itself (GET), so a client sees one server."""
EXTENSIONS = ("binary_tensor_data", "parameters", "model_configuration", "statistics",
              "trace", "generate")  # fmt: skip
"""What ``GET /v2`` lists: the extensions whose model-level paths the router routes
(whether a model's server implements one is up to that server)."""

ELEMENT_SIZE: Mapping[str, int] = {
    "BOOL": 1,
    "INT8": 1,
    "UINT8": 1,
    "INT16": 2,
    "UINT16": 2,
    "FP16": 2,
    "BF16": 2,
    "INT32": 4,
    "UINT32": 4,
    "FP32": 4,
    "INT64": 8,
    "UINT64": 8,
    "FP64": 8,
}
"""Bytes per element in the binary tensor extension (BYTES: see :func:`bytes_elements`)."""
DATATYPES = frozenset({*ELEMENT_SIZE, "BYTES"})

# JSON value types each datatype accepts in ``data`` (ints are fine for floats).
_INT = frozenset({int})
_JSON_TYPES: Mapping[str, frozenset[type]] = {
    "BOOL": frozenset({bool}),
    "BYTES": frozenset({str}),
    **{t: _INT for t in ELEMENT_SIZE if "INT" in t},
    **{t: frozenset({int, float}) for t in ("FP16", "BF16", "FP32", "FP64")},
}


def is_kserve_path(path: str) -> bool:
    """``/v2`` and everything under it: the protocol's namespace."""
    return path == "/v2" or path.startswith("/v2/")


def match(path: str) -> KServePath | None:
    """The model-level parts of ``path``, read from its end: a known operation suffix,
    then a ``/versions/{v}`` segment before it; the rest is the model name (which may
    contain ``/``). ``None`` for paths outside ``/v2/models/{name}``."""
    if not path.startswith(MODELS_PREFIX):
        return None
    rest = path[len(MODELS_PREFIX) :]
    op = None
    for suffix in OPERATIONS:
        if rest.endswith(suffix) and len(rest) > len(suffix):
            op, rest = suffix, rest[: -len(suffix)]
            break
    version = None
    at = rest.rfind(_VERSIONS)
    if at > 0:
        tail = rest[at + len(_VERSIONS) :]
        if tail and "/" not in tail:
            version, rest = tail, rest[:at]
    return KServePath(rest, version, op) if rest else None


def is_infer(m: KServePath) -> bool:
    return m.op == "/infer"


def reserved_suffix(name: str) -> str | None:
    """The suffix of ``name`` that a path would read as a version or an operation
    (``a/ready``, ``a/versions/2``), or ``None``: such names cannot be routed by path."""
    m = match(MODELS_PREFIX + name)
    if m is None or m.name == name:
        return None
    return name[len(m.name) :]


def server_endpoint(path: str) -> str:
    """The server-level endpoint the router answers for ``path`` (under ``/v2``, not
    a model path); 404 for the ones it does not serve."""
    endpoint = SERVER_PATHS.get(path)
    if endpoint is not None:
        return endpoint
    if path.startswith("/v2/repository"):
        raise UnsupportedEndpoint(
            "the model repository extension (/v2/repository/...) is not served through "
            "the router: it loads and unloads models on one server, and the router fronts "
            "many; call the model server itself"
        )
    raise UnsupportedEndpoint(
        f"{_show(path)} is not served through the router; it serves /v2, "
        "/v2/health/live, /v2/health/ready, /v2/models and /v2/models/{name}[/versions/{v}]"
        "[/ready|/infer|/config|/stats|/trace/setting|/generate|/generate_stream]"
    )


def from_path(head: RequestHead, m: KServePath, capabilities: Requirements) -> InferenceRequest:
    name = unquote(m.name)
    if not name:
        raise InvalidRequest("model name in the path is empty")
    path_version = unquote(m.version) if m.version else None
    header_version = head.headers.get("x-model-version") or None
    version = path_version or header_version
    source = "path" if path_version or not header_version else "path, header x-model-version"
    return InferenceRequest(
        protocol="kserve_v2",
        model=name,
        version=version,
        head=head,
        capabilities=capabilities,
        source=source,
    )


def check_request(body: Mapping[str, Any], binary: bytes | memoryview | None = None) -> None:
    """400 (:class:`InvalidRequest`, with ``field``) unless ``body`` is a well-formed infer request.

    ``binary`` is what follows the JSON header in the binary tensor extension
    (``None`` without the extension): inputs with ``binary_data_size`` take
    their bytes from it in input order and must account for all of it.
    """
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        what = "missing" if inputs is None else "not an array"
        raise InvalidRequest(f"'inputs' is {what}; it must be an array of tensors", field="/inputs")
    params = body.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise InvalidRequest("'parameters' must be an object", field="/parameters")
    names: set[str] = set()
    offset = 0
    for i, tensor in enumerate(inputs):
        at = f"/inputs/{i}"
        datatype, count = _check_tensor(tensor, at, names, require_shape=True)
        offset = _check_input_data(tensor, at, datatype, count, binary, offset)
    if binary is not None and offset != len(binary):
        raise InvalidRequest(
            f"{len(binary)} bytes of tensor data follow the inference header, but the "
            f"inputs' binary_data_size add up to {offset}"
        )
    outputs = body.get("outputs")
    if outputs is None:
        return
    if not isinstance(outputs, list):
        raise InvalidRequest("'outputs' must be an array", field="/outputs")
    out_names: set[str] = set()
    for i, tensor in enumerate(outputs):
        _check_tensor(tensor, f"/outputs/{i}", out_names, require_shape=False)


def _check_tensor(
    tensor: object, at: str, names: set[str], *, require_shape: bool
) -> tuple[str, int]:
    """Name (unique), parameters, and for inputs datatype and concrete shape; returns
    the datatype and the element count the shape implies."""
    if not isinstance(tensor, dict):
        raise InvalidRequest("each tensor must be an object", field=at)
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("tensor 'name' must be a non-empty string", field=at + "/name")
    if name in names:
        raise InvalidRequest(f"tensor name {shown(name)} appears twice", field=at + "/name")
    names.add(name)
    params = tensor.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise InvalidRequest("tensor 'parameters' must be an object", field=at + "/parameters")
    if not require_shape:
        return "", 0
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidRequest(
            f"datatype {_show(datatype)} is not a KServe v2 datatype", field=at + "/datatype"
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list):
        raise InvalidRequest("'shape' must be an array of dimensions", field=at + "/shape")
    count = 1
    for dim in shape:
        if type(dim) is not int or dim < 0:
            what = "-1 (a request shape must be concrete)" if dim == -1 else _show(dim)
            raise InvalidRequest(f"shape dimension {what} is not a size", field=at + "/shape")
        count *= dim
    return datatype, count


def _check_input_data(
    tensor: Mapping[str, Any],
    at: str,
    datatype: str,
    count: int,
    binary: bytes | memoryview | None,
    offset: int,
) -> int:
    """Check the input's ``data`` or binary bytes; returns the new binary offset."""
    params = tensor.get("parameters") or {}
    size = params.get("binary_data_size")
    data = tensor.get("data")
    if size is None:
        if data is None:
            if "shared_memory_region" in params:
                return offset
            raise InvalidRequest(
                "input has neither 'data' nor parameters.binary_data_size", field=at
            )
        _check_json_data(data, at + "/data", datatype, count)
        return offset
    size_at = at + "/parameters/binary_data_size"
    if data is not None:
        raise InvalidRequest("input has both 'data' and binary_data_size", field=size_at)
    if type(size) is not int or size < 0:
        raise InvalidRequest("binary_data_size must be a non-negative integer", field=size_at)
    if binary is None:
        raise InvalidRequest(
            "binary_data_size needs the binary tensor extension "
            "(an Inference-Header-Content-Length header)",
            field=size_at,
        )
    if offset + size > len(binary):
        raise InvalidRequest(
            f"binary_data_size {size} runs past the end of the body's tensor data", field=size_at
        )
    if datatype == "BYTES":
        found = bytes_elements(memoryview(binary)[offset : offset + size], count)
        if found != count:
            raise InvalidRequest(
                f"binary BYTES data does not hold exactly {count} length-prefixed elements",
                field=size_at,
            )
    elif size != count * ELEMENT_SIZE[datatype]:
        raise InvalidRequest(
            f"binary_data_size is {size}, but shape x {datatype} size is "
            f"{count} x {ELEMENT_SIZE[datatype]} = {count * ELEMENT_SIZE[datatype]}",
            field=size_at,
        )
    return offset + size


def bytes_elements(data: bytes | memoryview, limit: int) -> int:
    """How many 4-byte-LE-length-prefixed elements exactly fill ``data``; -1 if they
    don't (a prefix or element runs past the end) or there are more than ``limit``."""
    pos, n, end = 0, 0, len(data)
    while pos < end:
        if n == limit or pos + 4 > end:
            return -1
        pos += 4 + int.from_bytes(data[pos : pos + 4], "little")
        n += 1
    return n if pos == end else -1


def _check_json_data(data: object, at: str, datatype: str, count: int) -> None:
    if not isinstance(data, list):
        raise InvalidRequest("'data' must be an array", field=at)
    found, types = _leaves(data)
    if found != count:
        raise InvalidRequest(f"'data' has {found} elements, but the shape needs {count}", field=at)
    bad = types - _JSON_TYPES[datatype]
    if bad:
        names = ", ".join(sorted(_json_name(t) for t in bad))
        raise InvalidRequest(f"'data' holds {names} values, not valid for {datatype}", field=at)


def _leaves(data: list[Any]) -> tuple[int, set[type]]:
    """Leaf count of nested arrays and the set of leaf types."""
    count = 0
    types: set[type] = set()
    stack = [data]
    while stack:
        node = stack.pop()
        kinds = set(map(type, node))
        if list in kinds:
            for x in node:
                if type(x) is list:
                    stack.append(x)
                else:
                    count += 1
            kinds.discard(list)
        else:
            count += len(node)
        types |= kinds
    return count, types


def _json_name(t: type) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}.get(
        t, "null"
    )


def _show(value: object) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    return "missing" if value is None else repr(value)[:40]
