"""Rows of the message store read back, checked: the body as a `Message`, and what to do with a
row that cannot be used as it is (pure: no I/O).

The store writes every row itself, so a bad cell means the file was damaged or edited by hand.
One such row must not stop every command (issue: a single bad cell made `check`, `inbox`,
`show` and `search` fail on every run). `inspect_row` says whether a row is usable, repairable
(its body is intact: the columns derived from it are recomputed and delivery state reset to
something safe, so the message is delivered again rather than lost) or must be set aside (its
body or id cannot be read: kept for a person, and fetched again from the hub if it still holds it).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, NamedTuple

from .delivery import FINISHED_STATES, OPEN_STATES, STATES, Record
from .message import PRIORITIES, Message
from .tier0 import ATTENTION, DISPOSITIONS

_DISPOSITIONS = frozenset((ATTENTION, *DISPOSITIONS))
_STATES = frozenset(STATES)
_PRIORITIES = frozenset(PRIORITIES)
_TEXT_COLUMNS = ("sender", "recipient", "type", "reply_to", "text", "reason")
_DERIVED = ("seq", "sender", "recipient", "type", "reply_to", "timestamp", "text", "priority", "broadcast")


class Inspection(NamedTuple):
    msg: Message | None  # the body, when the row has a readable one
    problem: str | None = None  # why the row cannot be used as it is
    fixes: dict[str, Any] | None = None  # column -> value that repairs it; None with a problem: set aside


def row_dict(row: Any) -> dict[str, Any]:
    return dict(zip(row.keys(), row)) if isinstance(row, sqlite3.Row) else row


def body_message(body: str) -> Message:
    """A stored body (the message as the hub sent it) as a `Message`; ValueError when it is not one."""
    raw = json.loads(body)
    if not isinstance(raw, dict):
        raise ValueError("not an object")
    msg = Message(
        seq=raw.get("seq"), id=raw.get("id"), sender=raw.get("from"), to=raw.get("to"), type=raw.get("type") or "chat",
        payload=raw.get("payload"), reply_to=raw.get("reply_to"), timestamp=raw.get("timestamp"),
    )
    for value, kinds in ((msg.id, str), (msg.sender, str), (msg.payload, dict), (msg.type, str),
                         (msg.seq, (int, type(None))), (msg.to, (str, type(None))), (msg.reply_to, (str, type(None))),
                         (msg.timestamp, (int, type(None)))):
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise ValueError("a field of the wrong type")
    return msg


def row_message(row: Any) -> Message | None:
    """The stored body as a `Message`, exactly as the hub sent it; None for a row without one
    (a stub imported from 0.1, an unreadable message set aside)."""
    body = row["body"]
    return None if body is None else body_message(body)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _clean_text(value: Any) -> bool:
    """Text the store could have written: str without lone surrogates (a cell of invalid UTF-8
    read back tolerantly holds them)."""
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def inspect_row(row: Any, now: float, derived: Any) -> Inspection:
    """Check one row of the messages table. `derived(msg)` gives the columns a body puts in a
    row (store._body_columns as a dict), for repairs."""
    if not isinstance(row["id"], str) or not row["id"] or not _clean_text(row["id"]):
        return Inspection(None, "its id cannot be read")
    msg = None
    if row["body"] is not None:
        try:
            msg = body_message(row["body"]) if isinstance(row["body"], str) else None
        except (ValueError, RecursionError):
            msg = None
        if msg is None:
            return Inspection(None, "its stored body is not a message")
    bad = [c for c in _TEXT_COLUMNS if not _clean_text(row[c])]
    bad += [c for c in ("seq", "timestamp") if row[c] is not None and (not isinstance(row[c], int) or isinstance(row[c], bool))]
    if row["priority"] not in _PRIORITIES:
        bad.append("priority")
    if row["broadcast"] not in (0, 1):
        bad.append("broadcast")
    fixes: dict[str, Any] = {}
    if bad:
        if "reason" in bad:
            fixes["reason"] = None
        if msg is not None:
            fixes.update({c: v for c, v in derived(msg).items() if c in _DERIVED})
        else:
            fixes.update({c: None for c in bad if c in _TEXT_COLUMNS or c in ("seq", "timestamp")})
            fixes.update({c: d for c, d in (("priority", "normal"), ("broadcast", 0)) if c in bad})
    disposition = row["disposition"]
    if disposition not in _DISPOSITIONS:
        disposition = fixes["disposition"] = ATTENTION  # at least once: shown again rather than lost
    state = row["state"]
    if state not in _STATES or (disposition != ATTENTION and state != "done"):
        state = fixes["state"] = "pending" if disposition == ATTENTION and msg is not None else "done"
    for column in ("deliveries", "expired"):
        if not isinstance(row[column], int) or isinstance(row[column], bool) or row[column] < 0:
            fixes[column] = 0
    if row["ever_shown"] not in (0, 1):
        fixes["ever_shown"] = 0
    due = row["due"]
    if state in ("leased", "shown", "deferred") and not _is_number(due):
        fixes["due"] = now  # comes back at once
    elif due is not None and not _is_number(due):
        fixes["due"] = None
    finished_at = row["finished_at"]
    if state in FINISHED_STATES and not _is_number(finished_at):
        fixes["finished_at"] = now
    elif state in OPEN_STATES and finished_at is not None:
        fixes["finished_at"] = None
    if not _is_number(row["received_at"]):
        fixes["received_at"] = now
    if not isinstance(row["via"], str) or not _clean_text(row["via"]):
        fixes["via"] = "poll"
    if row["rule"] is not None and (not isinstance(row["rule"], int) or isinstance(row["rule"], bool)):
        fixes["rule"] = None
    if not fixes:
        return Inspection(msg)
    return Inspection(msg, "damaged cells: " + ", ".join(sorted(fixes)), fixes)


def open_record(row: Any) -> Record:
    """The delivery state of a checked open row."""
    return Record(
        state=row["state"], deliveries=row["deliveries"], expired=row["expired"], due=row["due"],
        ever_shown=bool(row["ever_shown"]), arrival=row["rowid"], why=row["reason"] or "",
    )


def raw_row(row: Any) -> str:
    """A row as JSON for a person (bytes as hex, text kept with its bad bytes escaped)."""
    out = {}
    for key, value in row_dict(row).items():
        if isinstance(value, bytes):
            value = {"hex": value.hex()}
        elif isinstance(value, str) and not _clean_text(value):
            value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        out[key] = value
    return json.dumps(out)


__all__ = ["Inspection", "body_message", "inspect_row", "open_record", "raw_row", "row_dict", "row_message"]
