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

from .delivery import FINISHED_STATES, OPEN_STATES, STATES, Record, bounded_due
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
    return dict(zip(row.keys(), row, strict=True)) if isinstance(row, sqlite3.Row) else row


def body_message(body: str) -> Message:
    """A stored body (the message as the hub sent it) as a `Message`; ValueError when it is not one."""
    raw = json.loads(body)
    if not isinstance(raw, dict):
        raise ValueError("not an object")
    msg = Message(
        seq=raw.get("seq"),
        id=raw.get("id"),  # type: ignore[arg-type]  # checked just below, with the rest
        sender=raw.get("from"),  # type: ignore[arg-type]
        to=raw.get("to"),
        type=raw.get("type") or "chat",
        payload=raw.get("payload"),  # type: ignore[arg-type]
        reply_to=raw.get("reply_to"),
        timestamp=raw.get("timestamp"),
    )
    for value, kinds in (
        (msg.id, str),
        (msg.sender, str),
        (msg.payload, dict),
        (msg.type, str),
        (msg.seq, (int, type(None))),
        (msg.to, (str, type(None))),
        (msg.reply_to, (str, type(None))),
        (msg.timestamp, (int, type(None))),
    ):
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
    row (store_db.body_columns as a dict), for repairs."""
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
    fixes = {**_copy_fixes(row, msg, derived), **_delivery_fixes(row, msg, now)}
    if not fixes:
        return Inspection(msg)
    return Inspection(msg, "damaged cells: " + ", ".join(sorted(fixes)), fixes)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _copy_fixes(row: Any, msg: Message | None, derived: Any) -> dict[str, Any]:
    """The columns copied from the body for queries: recomputed from it when one is bad."""
    bad = [c for c in _TEXT_COLUMNS if not _clean_text(row[c])]
    bad += [c for c in ("seq", "timestamp") if row[c] is not None and not _is_int(row[c])]
    bad += [
        c
        for c, ok in (("priority", row["priority"] in _PRIORITIES), ("broadcast", row["broadcast"] in (0, 1)))
        if not ok
    ]
    if not bad:
        return {}
    fixes: dict[str, Any] = {"reason": None} if "reason" in bad else {}
    if msg is not None:
        return {**fixes, **{c: v for c, v in derived(msg).items() if c in _DERIVED}}
    defaults = {"priority": "normal", "broadcast": 0}
    return {**fixes, **{c: defaults.get(c) for c in bad}}


def _delivery_fixes(row: Any, msg: Message | None, now: float) -> dict[str, Any]:
    """The delivery state: anything unreadable is reset so the message comes back (at least
    once) rather than being lost or stuck."""
    fixes: dict[str, Any] = {}
    disposition = row["disposition"]
    if disposition not in _DISPOSITIONS:
        disposition = fixes["disposition"] = ATTENTION
    state = row["state"]
    if state not in _STATES or (disposition != ATTENTION and state != "done"):
        deliverable = disposition == ATTENTION and (msg is not None or row["via"] == "import")
        state = fixes["state"] = "pending" if deliverable else "done"
    fixes.update({c: 0 for c in ("deliveries", "expired") if not _is_int(row[c]) or row[c] < 0})
    if row["ever_shown"] not in (0, 1):
        fixes["ever_shown"] = 0
    if not (row["due"] is None or _is_number(row["due"])) or (
        state in ("leased", "shown", "deferred") and row["due"] is None
    ):
        fixes["due"] = now if state in ("leased", "shown", "deferred") else None  # due: comes back at once
    if row["span"] is not None and not (_is_number(row["span"]) and row["span"] >= 0):
        fixes["span"] = None  # (the due is then bounded by the longest defer)
    if state in FINISHED_STATES and not _is_number(row["finished_at"]):
        fixes["finished_at"] = now
    elif state in OPEN_STATES and row["finished_at"] is not None:
        fixes["finished_at"] = None
    if not _is_number(row["received_at"]):
        fixes["received_at"] = now
    if not isinstance(row["via"], str) or not _clean_text(row["via"]):
        fixes["via"] = "poll"
    if row["rule"] is not None and not _is_int(row["rule"]):
        fixes["rule"] = None
    return fixes


def open_record(row: Any, now: float) -> Record:
    """The delivery state of a checked open row at `now` (a lease or defer taken while the
    clock ran ahead is over: `delivery.bounded_due`)."""
    return Record(
        state=row["state"],
        deliveries=row["deliveries"],
        expired=row["expired"],
        due=bounded_due(row["due"], row["span"], now),
        ever_shown=bool(row["ever_shown"]),
        arrival=row["rowid"],
        why=row["reason"] or "",
        span=row["span"],
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
