"""Naming a message: a seq, an id or an id prefix (`parse_ref`), and the stored rows they name."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from ..config import Settings
from ..delivery import FINISHED_STATES
from ..errors import UsageError
from ..store import IdPrefix, MessageStore, row_message
from ..untrusted import safe_field
from .common import open_store

_MSG_ID = r"^[0-9a-f]{16}$"  # patterns as text: re compiles (and caches) them when first used
MAX_SEQ = 2**63 - 1  # SQLite's integers: a larger number names no message
_HEX_REF = r"^[0-9a-f]{4,16}$"
_SET_ASIDE_KEY = r"^unreadable-(seq-\d{1,19}|[0-9a-f]{16})$"  # message.Unreadable.key
REF_RULE = "its seq (a number), its id (16 hex digits) or a unique id prefix (at least 4 hex digits)"


def parse_ref(ref: Any) -> int | str:
    """A message reference: an int is a seq; a string is a seq (`12`, `#12`), an id, or an id
    prefix of at least 4 hex digits (any case).

    An all-digit string of 4 or more digits is ambiguous on its face: it stays a string, and
    `MessageStore.resolve` reads it as a seq when a kept message has that seq, else as an id
    prefix. `#` forces a seq; 1-3 digits are always a seq (too short for a prefix)."""
    if isinstance(ref, bool):
        raise UsageError(f"a message is named by {REF_RULE}")
    if isinstance(ref, int):
        if not 0 <= ref <= MAX_SEQ:
            raise UsageError(f"seq {str(ref)[:24]} names no message: a seq is a number from 0 to {MAX_SEQ}")
        return ref
    if isinstance(ref, str):
        text = ref.strip()
        forced_seq = text.startswith("#")
        text = text.lstrip("#") if forced_seq else text
        if text.isascii() and text.isdigit() and (forced_seq or len(text) < 4):
            return parse_ref(int(text))
        # Kept in its case: a hub may choose ids that differ only in case (the store matches
        # the exact id first, then any case).
        if not forced_seq and re.fullmatch(_HEX_REF, text.lower()):
            return text
        if re.fullmatch(_SET_ASIDE_KEY, text.lower()):  # a poison record whose id could not be read
            return text.lower()
    raise UsageError(f"{str(ref)[:40]!r} names no message: give {REF_RULE}")


def named_refs(refs: Any, ids: Iterable[str], required_for: str | None = None) -> list[int | str]:
    """The messages named (seqs, ids, id prefixes); with `required_for`, naming none is an error."""
    if refs is None:
        items: list[Any] = []
    elif isinstance(refs, (int, str)):
        items = [refs]
    else:
        items = list(refs)
    if isinstance(ids, str):
        ids = [ids]
    refs = [parse_ref(x) for x in items]
    for i in ids:
        ref = parse_ref(i) if isinstance(i, str) and not i.strip().startswith("#") else None
        if not isinstance(ref, str):
            raise UsageError(
                f"{str(i)[:40]!r} is not a message id: give its 16 hex digits or a unique prefix of at least 4"
            )
        refs.append(IdPrefix(ref))  # named as an id: never read as a seq
    if required_for and not refs:
        raise UsageError(f"name the message(s) to {required_for} by seq or id")
    return refs


def resolve_refs(store: MessageStore, refs: Sequence[int | str], need_shown: bool) -> tuple[list[Any], list[Any]]:
    """The open messages `refs` name and those already finished; UsageError (nothing changed) otherwise."""
    targets, already, seen = [], [], set()
    for ref in refs:
        row = store.resolve(ref)
        label = ref_label(ref)
        if row is None or row["disposition"] != "attention":
            raise UsageError(
                f"no message with {label} was returned by check here; nothing was changed (see `agentcom inbox`)"
            )
        if row["id"] in seen:
            continue
        seen.add(row["id"])
        if row["state"] in FINISHED_STATES:
            already.append(row)
        elif need_shown and not row["ever_shown"]:
            raise UsageError(
                f"message {label} was never shown to the agent; run `agentcom check` first. Nothing was changed"
            )
        else:
            targets.append(row)
    return targets, already


def stored_row(s: Settings, ref: int | str, need_body: bool = True) -> tuple[Any, list[str]]:
    """The stored message a seq or id names (with its body, unless `need_body` is False: a
    poison record keeps only what could be read of it), and the store's warnings; UsageError
    when none is kept (saying why when its row was damaged)."""
    with open_store(s) as store:
        row = store.resolve(ref)
        warnings = store.take_warnings()
    if row is None or (need_body and row_message(row) is None):
        raise not_kept(ref, warnings)
    return row, warnings


def ref_label(ref: int | str) -> str:
    if isinstance(ref, int):
        return f"seq {ref}"
    if len(ref) >= 16:
        return f"id {safe_field(ref, _MSG_ID)}"
    if ref.isdigit() and not ref.startswith("0") and not isinstance(ref, IdPrefix):
        return f"seq or id prefix {ref}"
    return f"id prefix {ref}"


def not_kept(ref: int | str, warnings: Sequence[str] = ()) -> UsageError:
    why = "".join(f"; {w}" for w in warnings)
    return UsageError(f"no message with {ref_label(ref)} is kept here (see `agentcom inbox`){why}")
