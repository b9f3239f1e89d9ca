"""What the local hub accepts: the real hub's field rules for HTTP bodies and WebSocket frames,
with its error shape, plus one limit of our own (nesting depth).

Pure functions, no I/O. Errors are `{"field", "error", "detail", "value"?}` as the real hub
formats them: `required` (missing or null), `wrong_type`, `too_long`, and for a frame of a
type it does not know `unknown_message_type` with the list of known types. Fields nobody
declared pass through untouched, as on the real hub.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

# Deeper than this (the body or frame object itself is level 1) is refused. The real hub has no
# such limit; ours keeps what it stores parseable by any client (Python's own parser gives up
# near 1,000 levels, and a mailbox holding such a message could not be read at all).
MAX_DEPTH = 100


def wire_json(value: Any) -> str:
    """JSON as the real hub writes it (Jason): keys sorted (as Elixir orders a map's keys), text
    as it is, escaping only what JSON requires, so a frame is no larger than the body that was
    posted. A lone surrogate, which UTF-8 cannot carry, is the one thing written as a \\u escape
    instead."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return text


# The real hub's string length limits, in characters, for the fields that have one.
LENGTH_LIMITS = {
    "agent_id": 128,
    "description": 10_000,
    "status": 256,
    "channel": 64,
    "token": 256,
    "error": 2_000,
    "reason": 2_000,
    "name": 256,
    "repo": 512,
    "ollama_url": 512,
}

# Field kinds: "string", "integer", "number", "object", "boolean", ("list", kind).
Kind = Any


class Schema(NamedTuple):
    required: dict[str, Kind]
    optional: dict[str, Kind]


def _frame(required: dict[str, Kind] | None = None, optional: dict[str, Kind] | None = None) -> Schema:
    return Schema({"type": "string", **(required or {})}, optional or {})


# Every frame type the real hub knows (its schema table, plus the two reports its sidecar sends).
WS_SCHEMAS: dict[str, Schema] = {
    "identify": _frame(
        {"agent_id": "string", "token": "string"},
        {"name": "string", "status": "string", "capabilities": ("list", "string"), "ollama_url": "string"},
    ),
    "message": _frame({"payload": "object"}, {"to": "string", "message_type": "string", "reply_to": "string"}),
    "status": _frame({"status": "string"}),
    "list_agents": _frame(),
    "ping": _frame(),
    "channel_subscribe": _frame({"channel": "string"}),
    "channel_unsubscribe": _frame({"channel": "string"}),
    "channel_publish": _frame(
        {"channel": "string", "payload": "object"}, {"message_type": "string", "reply_to": "string"}
    ),
    "channel_history": _frame({"channel": "string"}, {"limit": "integer", "since": "integer"}),
    "list_channels": _frame(),
    "task_accepted": _frame({"task_id": "string"}),
    "task_progress": _frame({"task_id": "string"}, {"progress": "integer", "execution_event": "object"}),
    "task_complete": _frame(
        {"task_id": "string", "generation": "integer"},
        {
            "result": "object",
            "tokens_used": "integer",
            "verification_report": "object",
            "verification_history": ("list", "object"),
        },
    ),
    "task_failed": _frame({"task_id": "string", "generation": "integer"}, {"error": "string", "reason": "string"}),
    "task_recovering": _frame({"task_id": "string"}),
    "ollama_report": _frame({"ollama_url": "string"}),
    "resource_report": _frame(
        optional={
            "cpu_percent": "number",
            "ram_used_bytes": "number",
            "ram_total_bytes": "number",
            "vram_used_bytes": "number",
            "vram_total_bytes": "number",
            "timestamp": "number",
        }
    ),
    "wake_result": _frame(
        {"task_id": "string", "status": "string"}, {"attempt": "integer", "error": "string", "reason": "string"}
    ),
    "state_report": _frame(
        {"task_id": "string"}, {"status": "string", "generation": "integer", "assigned_at": "number"}
    ),
}
KNOWN_TYPES = sorted(WS_SCHEMAS)

HTTP_SCHEMAS: dict[str, Schema] = {
    "post_message": Schema({"payload": "object"}, {"to": "string", "type": "string", "reply_to": "string"}),
    "post_mailbox_ack": Schema({"seq": "integer"}, {}),
    "post_admin_token": Schema({"agent_id": "string"}, {}),
    "post_onboard_register": Schema({"agent_id": "string"}, {}),
    "post_channel": Schema({"name": "string"}, {"description": "string"}),
    "post_channel_publish": Schema({"payload": "object"}, {"type": "string", "reply_to": "string"}),
}


class TooDeep:
    """Stands for a JSON text nested too deep to be parsed at all."""


TOO_DEEP = TooDeep()


class Answered:
    """Marker: the request was already answered with an error (a body that was not what the route
    takes). Here, not in server.py, so groups.py's routes read it without importing the server."""


def parse_json(raw: bytes | str) -> Any:
    """The parsed value, or TOO_DEEP; raises ValueError for text that is not JSON."""
    try:
        return json.loads(raw)
    except RecursionError:
        return TOO_DEEP


def nesting_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Levels of objects and arrays in `value` (a scalar is 0), counted without recursion and
    only as far as `limit + 1`."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def depth_errors(value: Any, field: str) -> list[dict[str, Any]]:
    if value is TOO_DEEP or nesting_depth(value) > MAX_DEPTH:
        return [{"field": field, "error": "too_deep", "detail": f"nested deeper than {MAX_DEPTH} levels"}]
    return []


def validate_http(schema_name: str, body: Any) -> list[dict[str, Any]]:
    """Errors of one HTTP body; a body that is not an object counts as one without fields
    (the real hub's parser files it under a field of its own)."""
    too_deep = depth_errors(body, "body")
    if too_deep:
        return too_deep
    return _against(HTTP_SCHEMAS[schema_name], body if isinstance(body, dict) else {})


def validate_frame(frame: Any) -> list[dict[str, Any]]:
    """Errors of one WebSocket frame (already parsed), in the real hub's order: the frame
    must be an object with a known string `type`, then that type's fields are checked."""
    if frame is TOO_DEEP or not isinstance(frame, dict):
        detail = f"nested deeper than {MAX_DEPTH} levels" if frame is TOO_DEEP else "expected JSON object"
        return [{"field": "message", "error": "too_deep" if frame is TOO_DEEP else "wrong_type", "detail": detail}]
    kind = frame.get("type")
    if kind is None:
        return [{"field": "type", "error": "required", "detail": "field is required"}]
    if not isinstance(kind, str):
        return [_wrong("type", kind, "string")]
    schema = WS_SCHEMAS.get(kind)
    if schema is None:
        return [
            {
                "field": "type",
                "error": "unknown_message_type",
                "detail": f"unknown message type '{kind}'",
                "known_types": KNOWN_TYPES,
            }
        ]
    return depth_errors(frame, "message") or _against(schema, frame)


def _against(schema: Schema, data: dict[str, Any]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    for fields, required in ((schema.required, True), (schema.optional, False)):
        for field in sorted(fields):
            value = data.get(field)
            if value is None:
                if required:
                    errors.append({"field": field, "error": "required", "detail": "field is required"})
                continue
            errors.extend(_field_errors(field, value, fields[field]))
    return errors


def _field_errors(field: str, value: Any, kind: Kind) -> list[dict[str, Any]]:
    if isinstance(kind, tuple):
        if not isinstance(value, list):
            return [_wrong(field, value, "array")]
        for index, item in enumerate(value):
            if not _is(item, kind[1]):
                return [_wrong(f"{field}[{index}]", item, _KIND_NAMES[kind[1]])]
        return []
    if not _is(value, kind):
        return [_wrong(field, value, _KIND_NAMES[kind])]
    limit = LENGTH_LIMITS.get(field)
    if limit is not None and isinstance(value, str) and len(value) > limit:
        return [
            {
                "field": field,
                "error": "too_long",
                "detail": f"exceeds maximum length of {limit} characters",
                "value": value[:50] + "...",
            }
        ]
    return []


_KIND_NAMES = {"string": "string", "integer": "integer", "number": "number", "object": "object", "boolean": "boolean"}


def _is(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int)
    return isinstance(value, (int, float))  # number


def _wrong(field: str, value: Any, expected: str) -> dict[str, Any]:
    detail = f"expected {expected}, got {type_name(value)}"
    return {"field": field, "error": "wrong_type", "detail": detail, "value": value}


def type_name(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "null" if value is None else "unknown"
