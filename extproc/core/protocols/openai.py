"""OpenAI-compatible APIs (vLLM, TGI, SGLang...): the model is the body's ``model``.

:func:`check_request` is the protocol's own well-formedness (400), the same for
every model; model specs (422) are :mod:`extproc.core.specs.check`'s business.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from extproc.core.capabilities import Requirements
from extproc.core.errors import InvalidRequest
from extproc.core.request import InferenceRequest, RequestHead

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"
PATHS = frozenset({CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES})
"""Inference paths: POST, the model is the body's ``model``."""
MODELS = "/v1/models"
"""``GET /v1/models`` and ``GET /v1/models/{id}``: the router answers them itself."""
PATHS_REGEX = "^/v1/(chat/completions|completions|embeddings|responses|models(/.*)?)$"
"""Every OpenAI path the router knows (RE2 and Python ``re`` alike): their errors take
the OpenAI error shape, in Envoy's routes and local replies too."""

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
RESPONSE_ROLES = frozenset({"system", "developer", "user", "assistant"})
TOKEN_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def from_body(
    head: RequestHead, body: Mapping[str, Any], capabilities: Requirements, *, check: bool = True
) -> InferenceRequest:
    """The request named by ``body``; with ``check`` (default) the body must also be
    well-formed for its path (:func:`check_request`)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        what = "missing" if model is None else "not a non-empty string"
        raise InvalidRequest(f"'model' is {what}", field="/model")
    if check:
        check_request(head.path_only, body)
    version = head.headers.get("x-model-version") or None
    return InferenceRequest(
        protocol="openai",
        model=model,
        version=version,
        head=head,
        body=body,
        capabilities=capabilities,
        source="body 'model'" + (", header x-model-version" if version else ""),
        model_field="/model",
    )


def check_request(path: str, body: Mapping[str, Any]) -> None:
    """400 (:class:`InvalidRequest`, with ``field``) unless ``body`` is well-formed for ``path``.

    Checked whatever the model: ``model`` is a non-empty string; token limits are
    non-negative integers; chat ``messages`` is a non-empty array of message
    objects with a known ``role`` (tool messages carry ``tool_call_id``) and
    string, null or content-part-array ``content``; completions carry a
    ``prompt`` and embeddings an ``input`` (a string, an array of strings, an
    array of token ids or an array of token-id arrays); responses may carry an
    ``input`` (a string or an array of items: messages with a known ``role``,
    other items with a string ``type``) and string ``instructions``.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        what = "missing" if model is None else "not a non-empty string"
        raise InvalidRequest(f"'model' is {what}", field="/model")
    for name in TOKEN_LIMIT_FIELDS:
        value = body.get(name)
        if value is not None and not (_is_int(value) and value >= 0):
            raise InvalidRequest(f"'{name}' must be a non-negative integer", field="/" + name)
    if path == CHAT:
        _check_messages(body)
    elif path == COMPLETIONS:
        _check_text_or_tokens(body, "prompt")
    elif path == EMBEDDINGS:
        _check_text_or_tokens(body, "input")
    elif path == RESPONSES:
        _check_response_input(body)


def _is_int(value: object) -> bool:
    return type(value) is int or (type(value) is float and value.is_integer())


def _check_messages(body: Mapping[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list):
        what = "missing" if messages is None else "not an array"
        raise InvalidRequest(
            f"'messages' is {what}; it must be an array of messages", field="/messages"
        )
    if not messages:
        raise InvalidRequest("'messages' is empty; send at least one message", field="/messages")
    for i, msg in enumerate(messages):
        at = f"/messages/{i}"
        if not isinstance(msg, dict):
            raise InvalidRequest(f"message {i} must be an object", field=at)
        role = msg.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidRequest(
                f"message {i} has role {_show(role)}; use one of "
                "system, developer, user, assistant, tool",
                field=at + "/role",
            )
        if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
            raise InvalidRequest(
                f"message {i} has role tool but no string 'tool_call_id'",
                field=at + "/tool_call_id",
            )
        _check_content(msg.get("content"), f"message {i}", at, null=True)


TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
"""Content parts that carry a ``text`` (chat: ``text``; responses: the others)."""


def _check_content(content: object, what: str, at: str, *, null: bool) -> None:
    """A message's ``content`` (at ``at``/content): a string, ``null`` when allowed, or an
    array of parts, each an object with a string ``type``; text parts carry a string
    ``text``."""
    if isinstance(content, str) or (null and content is None):
        return
    if not isinstance(content, list):
        raise InvalidRequest(
            f"{what} content must be a string{', null' if null else ''} or an array of parts",
            field=at + "/content",
        )
    for j, part in enumerate(content):
        pat = f"{at}/content/{j}"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidRequest(
                f"{what} content part {j} must be an object with a string 'type'", field=pat
            )
        if part["type"] in TEXT_PARTS and not isinstance(part.get("text"), str):
            raise InvalidRequest(
                f"{what} content part {j} is a text part without a string 'text'",
                field=pat + "/text",
            )


def response_messages(body: Mapping[str, Any]) -> list[Any] | None:
    """The message items of a Responses ``input`` array (those with a ``role``)."""
    items = body.get("input")
    if not isinstance(items, list):
        return None
    return [i for i in items if isinstance(i, dict) and "role" in i]


def _check_response_input(body: Mapping[str, Any]) -> None:
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("'instructions' must be a string", field="/instructions")
    items = body.get("input")
    if items is None or isinstance(items, str):
        return
    if not isinstance(items, list):
        raise InvalidRequest("'input' must be a string or an array of input items", field="/input")
    for i, item in enumerate(items):
        at = f"/input/{i}"
        if not isinstance(item, dict):
            raise InvalidRequest(f"input item {i} must be an object", field=at)
        if "role" not in item:
            if not isinstance(item.get("type"), str):
                raise InvalidRequest(
                    f"input item {i} has neither a 'role' nor a string 'type'", field=at
                )
            continue
        role = item["role"]
        if not isinstance(role, str) or role not in RESPONSE_ROLES:
            raise InvalidRequest(
                f"input item {i} has role {_show(role)}; use one of "
                "system, developer, user, assistant",
                field=at + "/role",
            )
        _check_content(item.get("content"), f"input item {i}", at, null=False)


def _check_text_or_tokens(body: Mapping[str, Any], name: str) -> None:
    """``name`` is a string, or an array of strings, token ids or token-id arrays."""
    value = body.get(name)
    at = "/" + name
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        what = "missing" if value is None else "not a string or an array"
        raise InvalidRequest(
            f"'{name}' is {what}; send a string, strings, token ids or token-id arrays", field=at
        )
    if not value:
        return
    first = value[0]
    if isinstance(first, str):
        kind, ok = "strings", _all_str
    elif isinstance(first, list):
        kind, ok = "token-id arrays", _all_token_lists
    else:
        kind, ok = "token ids", _all_tokens
    for j, item in enumerate(value):
        if not ok(item):
            raise InvalidRequest(
                f"'{name}' mixes kinds or holds a bad item at {j}: expected {kind}",
                field=f"{at}/{j}",
            )


def _all_str(item: object) -> bool:
    return isinstance(item, str)


def _all_tokens(item: object) -> bool:
    return type(item) is int and item >= 0


def _all_token_lists(item: object) -> bool:
    return isinstance(item, list) and all(type(t) is int and t >= 0 for t in item)


def _show(value: object) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    return "missing" if value is None else f"of type {type(value).__name__}"
