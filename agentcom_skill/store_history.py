"""What the message store holds, read back: history, threads, search, counts, and the
references (`ack 3f2a`, `show #12`) that name a stored message or a sent one.

`StoreHistory` reads through `StoreDatabase` (`store_db.py`: damaged rows repaired or set
aside); `MessageStore` (`store.py`, the mailbox) is built on it. It writes only the
full-text index, which `search` brings up to date.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from .delivery import (
    OPEN_STATES,
)
from .errors import BusyError, StateError, UsageError
from .render import ambiguous_ref_text
from .store_db import OPEN_SQL, OVER_SQL, StoreDatabase, in_chunks
from .stored import row_dict

# What history lists: every message but the bare ids 0.1 knew without a sender (a poison record
# whose sender could not be read is listed: it is kept for a person)
# ... nor what was said in a channel or the room we had not joined or had left (tier0 row 10):
# kept only as an id seen, so the hub is acked past it and it is never taken in again.
_LISTED = "((sender IS NOT NULL OR via IS NOT 'import') AND NOT (disposition = 'drop' AND rule IS 10))"
AMBIGUOUS_SHOWN = 10  # candidates an ambiguous id prefix error lists


class IdPrefix(str):
    """A reference given as an id (`ack --id`): a full id or a prefix, never read as a seq."""


class AmbiguousRef(UsageError):
    """An id prefix that names several messages: the error lists them (on safe terms)."""

    def __init__(self, prefix: str, candidates: list[dict[str, Any]], more: bool = False):
        super().__init__(ambiguous_ref_text(prefix, candidates, more))
        self.candidates = candidates


def _any_case(ref: str) -> str:
    """A LIKE pattern (escape `\\`) for the ids `ref` names regardless of ASCII case: a whole
    id (16 characters or more) as is, a shorter one as a prefix."""
    escaped = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped if len(ref) >= 16 else escaped + "%"


def _number(value: Any) -> float:
    """A time column as a sort key (a damaged cell sorts first, as SQLite puts NULL)."""
    return float(value) if isinstance(value, (int, float)) else float("-inf")


class StoreHistory(StoreDatabase):
    """Reads of the store's history: what was received and sent, threads, search, counts,
    references to a stored message."""

    # counts ------------------------------------------------------------------

    def in_lease(self, now: float) -> tuple[int, float | None]:
        """Messages returned and still in their lease, and when the first lease ends (a lease
        taken while the clock ran ahead is over, not in lease)."""
        row = self._read(
            f"SELECT COUNT(*), MIN(due) FROM messages WHERE state IN {OPEN_SQL} AND state IN ('leased', 'shown')"
            f" AND due > ?1 AND NOT {OVER_SQL}",
            (now,),
        )[0]
        return int(row[0]), row[1]

    def counts(self, now: float) -> dict[str, Any]:
        """What `status` and `inbox` say the store holds: from the counters and the lease index,
        never a scan."""
        by_key: dict[tuple[str, str], int] = {
            (r[0], r[1]): int(r[2]) for r in self._read("SELECT disposition, state, n FROM message_counts")
        }
        in_lease, next_due = self.in_lease(now)
        return {
            "open": sum(by_key.get(("attention", s), 0) for s in OPEN_STATES),
            "in_lease": in_lease,
            "next_due": next_due,
            "deferred": by_key.get(("attention", "deferred"), 0),
            "dead": by_key.get(("attention", "dead"), 0),
            "stored": sum(by_key.values()),
        }

    # references: what `ack`, `show`, `reply` name ----------------------------

    def resolve(self, ref: str | int) -> sqlite3.Row | None:
        """The message a reference names (see `skill.parse_ref`): an int is a seq; a string is
        an exact id, or, from 4 hex digits, a unique id prefix (as git does; several matches
        raise `AmbiguousRef`). A plain all-digit string of 4-15 digits without a leading zero
        is a seq when a kept message has that seq, else an id prefix. A seq picks the open
        message (seqs can be reused: two open ones with it raise `AmbiguousRef`), else the
        newest. Ids are compared exactly first (a hub may choose ids that differ only in case:
        each names its own message); failing that, a prefix or an id in another case matches
        regardless of case, and must be unique."""
        if isinstance(ref, int):
            return self._resolve_seq(ref)
        rows = self._message_rows("SELECT rowid, * FROM messages WHERE id = ?", (ref,))
        if rows or len(ref) < 4:
            return rows[0] if rows else None
        if len(ref) < 16 and ref.isdigit() and not ref.startswith("0") and not isinstance(ref, IdPrefix):
            row = self._resolve_seq(int(ref))
            if row is not None:
                return row
        # A whole id (16 characters or more) in another case, or a prefix: any case. The inner
        # query reads the id index only (LIKE ignores ASCII case; the ref has no wildcards).
        rows = self._message_rows(
            "SELECT rowid, * FROM messages WHERE id IN"
            " (SELECT id FROM messages WHERE id LIKE ? ESCAPE '\\' LIMIT ?) ORDER BY id",
            (_any_case(ref), AMBIGUOUS_SHOWN + 1),
        )
        if len(rows) > 1:
            raise AmbiguousRef(ref, [row_dict(r) for r in rows[:AMBIGUOUS_SHOWN]], more=len(rows) > AMBIGUOUS_SHOWN)
        return rows[0] if rows else None

    def _resolve_seq(self, seq: int) -> sqlite3.Row | None:
        """The message with this seq: the open one (two open ones: refused, the hub's seq went
        back and either may be meant, guarantee 11), else the one shown, else the newest."""
        rows = self._message_rows(
            f"SELECT rowid, * FROM messages WHERE seq = ?"
            f" ORDER BY (state IN {OPEN_SQL}) DESC, ever_shown DESC, rowid DESC LIMIT ?",
            (seq, AMBIGUOUS_SHOWN + 1),
        )
        still_open = [r for r in rows if r["state"] in OPEN_STATES]
        if len(still_open) > 1:
            raise AmbiguousRef(
                f"#{seq}", [row_dict(r) for r in still_open[:AMBIGUOUS_SHOWN]], more=len(still_open) > AMBIGUOUS_SHOWN
            )
        return rows[0] if rows else None

    def sent_ids(self, ref: str) -> list[str]:
        """Ids of messages we sent that `ref` names: the exact id, or those it names in any case
        (a prefix, or a whole id in another case)."""
        exact = [r[0] for r in self._read("SELECT id FROM sent WHERE id = ?", (ref,))]
        if exact:
            return exact
        return [
            r[0]
            for r in self._read(
                "SELECT id FROM sent WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT ?",
                (_any_case(ref), AMBIGUOUS_SHOWN + 1),
            )
        ]

    # threads -----------------------------------------------------------------

    def received_at(self, ids: Sequence[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for marks, chunk in in_chunks(ids):
            sql = f"SELECT id, received_at FROM messages WHERE id IN ({marks})"
            out.update((r[0], r[1]) for r in self._read(sql, chunk))
        return out

    def thread_root(self, reply_to: str | None, own_id: str, most: int = 50) -> str:
        """The first message of a reply_to chain, through what we received and what we sent;
        an unknown parent is the root (messages answering the same unknown one share it)."""
        root, parent, seen = own_id, reply_to, {own_id}
        while parent and parent not in seen and len(seen) < most:
            seen.add(parent)
            root = parent
            rows = self._read("SELECT reply_to FROM messages WHERE id = ? LIMIT 1", (parent,)) or self._read(
                "SELECT reply_to FROM sent WHERE id = ? LIMIT 1", (parent,)
            )
            parent = rows[0][0] if rows else None
        return root

    # history and search ------------------------------------------------------

    def messages(
        self,
        *,
        sender: str | None = None,
        type_: str | None = None,
        state: str | None = None,
        disposition: str | None = None,
        since: float | None = None,
        limit: int = 50,
        ids: Sequence[str] | None = None,
        channel: str | None = None,
    ) -> list[sqlite3.Row]:
        """Stored messages, newest first; `channel`: those said there ("#name" or "@room")."""
        where: list[str] = [_LISTED]
        params: list[Any] = []
        if channel == "@room":
            where.append("recipient = '@room' AND seq IS NULL")
        elif channel is not None:
            where.append("recipient IS NULL AND json_extract(body, '$.payload.channel') = ?")
            params.append(channel.removeprefix("#"))
        for column, value in (("sender", sender), ("type", type_), ("state", state), ("disposition", disposition)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("received_at >= ?")
            params.append(since)
        # newest first; with --since, by arrival time (the same order but for a clock gone back),
        # which its index reads newest first and stops at the limit (by rowid, a short window
        # was found only after reading every older row)
        order = "received_at DESC, rowid DESC" if since is not None else "rowid DESC"
        sql = f"SELECT rowid, * FROM messages WHERE {' AND '.join(where)}{{ids}} ORDER BY {order} LIMIT ?"
        if ids is None:
            return self._message_rows(sql.replace("{ids}", ""), [*params, limit])
        chunks = self._rows_in(self._message_rows, sql, " AND id IN ({marks})", ids, params, [limit])
        if len(chunks) == 1:
            return chunks[0]
        newest = (lambda r: (_number(r["received_at"]), r["rowid"])) if since is not None else (lambda r: r["rowid"])
        return sorted((r for rows in chunks for r in rows), key=newest, reverse=True)[:limit]

    def index_for_search(self) -> bool:
        """Bring the full-text index up to date with the rows stored since the last search.
        False when it cannot (no FTS5, or the store cannot be written now): scan without it."""
        if self.get_number("fts") != 1:
            return False
        mark = self.get_number("fts_rowid")
        if self._read("SELECT COALESCE(MAX(rowid), 0) FROM messages")[0][0] <= mark:
            return True
        try:
            with self.write():
                mark = self.get_number("fts_rowid")
                top = self._read("SELECT COALESCE(MAX(rowid), 0) FROM messages")[0][0]
                self._exec(
                    "INSERT INTO messages_fts(rowid, text, sender)"
                    " SELECT rowid, text, sender FROM messages WHERE rowid > ? ORDER BY rowid",
                    (mark,),
                )
                self.set_meta("fts_rowid", top)
        except (StateError, BusyError):
            return False
        return True

    def search(self, text: str, limit: int = 50) -> list[sqlite3.Row]:
        if self.index_for_search():
            query = " ".join('"' + word.replace('"', '""') + '"' for word in text.split())
            if query:
                try:
                    return self._message_rows(
                        "SELECT m.rowid, m.* FROM messages_fts f JOIN messages m ON m.rowid = f.rowid"
                        # newest first by the index's own rowid order: no sort of every hit
                        " WHERE messages_fts MATCH ? ORDER BY f.rowid DESC LIMIT ?",
                        (query, limit),
                    )
                except StateError:
                    pass  # an odd query: fall back to the plain scan
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return self._message_rows(
            f"SELECT rowid, * FROM messages WHERE {_LISTED} AND (text LIKE ? ESCAPE '\\' OR sender LIKE ? "
            "ESCAPE '\\')"
            " ORDER BY rowid DESC LIMIT ?",
            (pattern, pattern, limit),
        )

    def sent_messages(
        self, limit: int = 50, reply_to: Sequence[str] | None = None, ids: Sequence[str] | None = None
    ) -> list[sqlite3.Row]:
        if reply_to is not None or ids is not None:
            column, wanted = ("reply_to", reply_to) if reply_to is not None else ("id", ids)
            sql = "SELECT rowid, * FROM sent WHERE {ids} ORDER BY sent_at"
            chunks = self._rows_in(self._sent_rows, sql, column + " IN ({marks})", wanted or ())
            if len(chunks) == 1:
                return chunks[0]
            return sorted((r for rows in chunks for r in rows), key=lambda r: (_number(r["sent_at"]), r["rowid"]))
        return self._sent_rows("SELECT rowid, * FROM sent ORDER BY sent_at DESC LIMIT ?", (limit,))

    def sent_to(self, recipient: str) -> bool:
        """Whether anything was sent to `recipient` from here."""
        return bool(self._read("SELECT 1 FROM sent WHERE recipient = ? LIMIT 1", (recipient,)))

    def replies_to(self, ids: Sequence[str]) -> list[sqlite3.Row]:
        sql = f"SELECT rowid, * FROM messages WHERE {{ids}} AND {_LISTED}"
        return [r for rows in self._rows_in(self._message_rows, sql, "reply_to IN ({marks})", ids) for r in rows]

    def peers(self) -> dict[str, dict[str, Any]]:
        return {
            r[0]: {"status": r[1], "timestamp": r[2], "id": r[3], "at": r[4]}
            for r in self._read("SELECT * FROM peers ORDER BY agent_id")
        }
