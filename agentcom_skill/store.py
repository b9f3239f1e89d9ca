"""The local message store of one agent at one hub: SQLite, one file, mode 0600.

It keeps every message this agent received (bodies insert-only, keyed by message id; the
hub's seq is stored but is never the key), its delivery state and Tier 0 disposition,
every message the agent sent, the auto-replies it committed to, and peers' statuses.

Concurrency: every change is one short `BEGIN IMMEDIATE` transaction, and nothing holds a
transaction across the network. SQLite's lock serialises writers; a writer that cannot get
it within `busy_timeout` raises `BusyError` (exit 7). Readers never block (WAL).

Schema changes are numbered migrations (`migrations.py`), applied once each on open and recorded.

The store is three files, each one concern, each class built on the one before:
`store_db.py` (`StoreDatabase`: the file, its connection, the transaction rules, damaged
rows), `store_history.py` (`StoreHistory`: history, threads, search, references), and this
one (`MessageStore`: the mailbox, what a check reads and writes, leases, ack, defer, dead
letters, pruning). The A2A task table is `a2a_tasks.py`, on the store's public query surface.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .delivery import (
    CLOCK_SLACK,
    FINISHED_STATES,
    OPEN_STATES,
    CheckPlan,
    OpenMessage,
    Record,
    StoreView,
    bounded_due,
)
from .files import make_private_folder, refuse_links, shared_folder_warning
from .message import Message, Unreadable
from .store_db import BODY_COLUMNS, OPEN_SQL, OVER_SQL, body_columns, clean, in_chunks
from .store_history import AMBIGUOUS_SHOWN, AmbiguousRef, IdPrefix, StoreHistory
from .stored import open_record, row_dict, row_message

__all__ = [
    "AMBIGUOUS_SHOWN",
    "DB_NAME",
    "AmbiguousRef",
    "IdPrefix",
    "MessageStore",
    "clean",
    "row_dict",
    "row_message",
]
DB_NAME = "messages.sqlite3"


def _deferred_over(row: Any, now: float) -> bool:
    """A deferred row whose defer has ended (or was taken while the clock ran ahead)."""
    due = bounded_due(row["due"], row["span"], now) if row["due"] is not None else None
    return row["state"] == "deferred" and due is not None and due <= now


_FINISHED = "(" + ", ".join(f"'{state}'" for state in FINISHED_STATES) + ")"
# OVER_SQL (store_db.py) as two ranges of `due` the index serves (the second a superset,
# refined by delivery.bounded_due when the rows are read).
_DUE_OR_OVER = f"(due <= ?1 OR (due > ?1 + {CLOCK_SLACK!r} AND {OVER_SQL}))"
# tier0.attention_order in SQL: the expression of migration 6's index messages_pending, exactly
_PENDING_ORDER = "(CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 ELSE 2 END), broadcast, rowid"
PRUNE_INTERVAL = 3600.0  # seconds between pruning passes
PRUNE_STEP = 500  # rows one pruning transaction deletes or ages out at most (a short write)
VACUUM_STEP = 256  # free pages one pruning step gives back to the file system


class MessageStore(StoreHistory):
    """The store of one (hub, agent) folder. `MessageStore.memory()` is its in-memory twin."""

    @classmethod
    def memory(cls) -> MessageStore:
        return cls(":memory:")

    @classmethod
    def open(
        cls, directory: Path, busy_timeout: float = 10.0, on_wait: Callable[[str], None] | None = None
    ) -> MessageStore:
        """Open (creating and migrating) the folder's store."""
        directory = Path(directory)
        make_private_folder(directory)
        refuse_links(*(directory / f"{DB_NAME}{suffix}" for suffix in ("", "-wal", "-shm", "-journal")))
        store = cls(directory / DB_NAME, busy_timeout, on_wait)
        warning = shared_folder_warning(directory)
        if warning:
            store.warnings.append(warning)
        return store

    # what a check reads ------------------------------------------------------

    def view(
        self, batch_ids: Sequence[str], now: float, limit: int | None = None, refs: Sequence[str] = ()
    ) -> StoreView:
        """One consistent snapshot for `plan_check` (call inside `write()` to decide, outside to peek).

        It holds what one check may act on, never every open message: the ones whose lease or
        defer ended (what is due, a lease or defer taken while the clock ran ahead included),
        the first `limit` pending ones in attention order (None: all), stubs without a body, and
        counts of the rest; so a check or a pushed batch costs what it delivers, not what the
        store keeps. `refs`: ids to tell whether we sent them (the batch's reply_to, its room
        messages' keys)."""
        known: set[str] = set()
        for marks, chunk in in_chunks(batch_ids):
            known.update(r[0] for r in self._read(f"SELECT id FROM messages WHERE id IN ({marks})", chunk))
        due_sql = f"SELECT rowid, * FROM messages WHERE state IN {OPEN_SQL} AND state != 'pending' AND {_DUE_OR_OVER}"
        pending_sql = (
            "SELECT rowid, * FROM messages INDEXED BY messages_pending WHERE state = 'pending'"
            f" ORDER BY {_PENDING_ORDER}"
        )
        bodiless_sql = (
            f"SELECT rowid, * FROM messages INDEXED BY messages_bodiless WHERE body IS NULL AND state IN {OPEN_SQL}"
        )
        rows = self._message_rows(due_sql, (now,), now=now)
        rows += self._message_rows(bodiless_sql, now=now)
        if limit is None:
            rows += self._message_rows(pending_sql, now=now)
        elif limit > 0:
            rows += self._message_rows(pending_sql + " LIMIT ?", (limit,), now=now)
        open_rows: dict[str, Any] = {}
        for r in rows:
            if r["state"] in OPEN_STATES and r["disposition"] == "attention":
                open_rows.setdefault(r["id"], r)
        loaded = sum(1 for r in open_rows.values() if r["state"] == "pending" or _deferred_over(r, now))
        waiting = (
            self.counted("attention", "pending")
            + self._read(
                f"SELECT COUNT(*) FROM messages WHERE state IN {OPEN_SQL} AND state = 'deferred' AND {_DUE_OR_OVER}",
                (now,),
            )[0][0]
        )
        times: dict[str, list[float]] = {}
        for recipient, at in self._read("SELECT recipient, at FROM auto_replies WHERE at > ?", (now - 60,)):
            if isinstance(recipient, str) and isinstance(at, (int, float)):
                times.setdefault(recipient, []).append(at)
        return StoreView(
            known=frozenset(known),
            open=tuple(OpenMessage(r["id"], r["seq"], row_message(r), open_record(r, now)) for r in open_rows.values()),
            reply_times=times,
            cursor=int(self.get_number("cursor")),
            recovered=bool(self.get_number("recovered")),
            unloaded=max(0, waiting - loaded),
            leases=self.in_lease(now),
            groups=tuple(sorted(self.groups().items())),
            ours=self._sent_among(refs) if refs else frozenset(),
        )

    def counted(self, disposition: str, state: str) -> int:
        """Rows of this disposition and state (the counters the triggers keep)."""
        rows = self._read("SELECT n FROM message_counts WHERE disposition = ? AND state = ?", (disposition, state))
        return int(rows[0][0]) if rows else 0

    def known(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` (message ids, or unreadable entries' keys) this store holds."""
        out: set[str] = set()
        for marks, chunk in in_chunks(ids):
            out.update(r[0] for r in self._read(f"SELECT id FROM messages WHERE id IN ({marks})", chunk))
        return out

    def _sent_among(self, ids: Sequence[str]) -> frozenset[str]:
        found: set[str] = set()
        for marks, chunk in in_chunks(ids):
            found.update(r[0] for r in self._read(f"SELECT id FROM sent WHERE id IN ({marks})", chunk))
        return frozenset(found)

    # channels and the room ---------------------------------------------------

    def groups(self) -> dict[str, str]:
        """The channels ("#name") and the room ("@room") joined, each with its attention setting."""
        return {r[0]: r[1] for r in self._read("SELECT address, attend FROM groups ORDER BY address")}

    def join_group(self, address: str, attend: str, now: float) -> None:
        self._exec(
            "INSERT OR REPLACE INTO groups (address, attend, joined_at) VALUES (?, ?, ?)", (address, attend, now)
        )

    def leave_group(self, address: str) -> bool:
        return self._exec("DELETE FROM groups WHERE address = ?", (address,)).rowcount > 0

    def finished(self, ids: Sequence[str]) -> set[str]:
        out: set[str] = set()
        for marks, chunk in in_chunks(ids):
            out.update(
                r[0]
                # (+state: looked up by id; the state index would read every finished row)
                for r in self._read(f"SELECT id FROM messages WHERE id IN ({marks}) AND +state IN {_FINISHED}", chunk)
            )
        return out

    # what a check writes -----------------------------------------------------

    def apply_check(self, plan: CheckPlan, now: float, via: str = "poll") -> None:
        """Apply a plan inside `write()`: new messages, intents, leases, dead letters, roster, cursor."""
        columns = [
            *BODY_COLUMNS,
            "via",
            "received_at",
            "disposition",
            "rule",
            "reason",
            "state",
            "deliveries",
            "expired",
            "due",
            "finished_at",
            "span",
        ]
        leases = {lease.id: lease for lease in plan.leases}
        rows = []
        for msg, decision in plan.new:
            if decision.disposition != "attention":
                state: tuple[Any, ...] = ("done", 0, 0, None, now, None)
            elif msg.id in leases:  # stored and leased at once: one write a message, not two
                lease = leases.pop(msg.id)
                state = ("leased", lease.deliveries, lease.expired, lease.due, None, lease.due - now)
            else:
                state = ("pending", 0, 0, None, None, None)
            rows.append((*body_columns(msg), via, now, decision.disposition, decision.rule, decision.reason, *state))
        marks = ", ".join("?" * len(columns))
        self._many(f"INSERT OR IGNORE INTO messages ({', '.join(columns)}) VALUES ({marks})", rows)
        for msg, decision in plan.new:
            if decision.rule == 6:
                status = msg.payload.get("status")
                text = status if isinstance(status, str) else json.dumps(status, separators=(",", ":"))
                self.set_peer(msg.sender, text, msg.timestamp, msg.id, now)
        self._set_aside_unreadable(plan.unreadable, now, via)
        self._many(
            "INSERT OR IGNORE INTO auto_replies (message_id, recipient, kind, at) VALUES (?, ?, ?, ?)",
            [(r.reply_to, r.to, r.kind, now) for r in plan.replies],
        )
        self._many(
            "UPDATE messages SET state = 'leased', deliveries = ?, expired = ?, due = ?, span = ? WHERE id = ?",
            [(lease.deliveries, lease.expired, lease.due, lease.due - now, lease.id) for lease in leases.values()],
        )
        self._many("UPDATE messages SET state = 'dead', finished_at = ? WHERE id = ?", [(now, i) for i in plan.dead])
        self._many(
            "UPDATE messages SET state = 'dismissed', reason = 'body lost before this version kept it', finished_at = ?"
            " WHERE id = ?",
            [(now, i) for i in plan.lost],
        )
        if plan.cursor is not None:
            self.set_meta("cursor", plan.cursor)
        if plan.clear_recovered:
            self.set_meta("recovered", 0)

    def _set_aside_unreadable(self, items: Sequence[Unreadable], now: float, via: str) -> None:
        """Messages that could not be read: a finished (dead) row under their key, so the hub is
        acked past them and a later poll drops them as known, and what arrived, for a person."""
        rows = [
            (
                item.key,
                item.seq,
                clean(item.sender),
                f"(unreadable: {item.reason})",
                via,
                now,
                f"unreadable: {item.reason}",
                now,
            )
            for item in items
        ]
        self._many(
            "INSERT OR IGNORE INTO messages (id, seq, sender, text, via, received_at, disposition, reason, state,"
            " finished_at) VALUES (?, ?, ?, ?, ?, ?, 'attention', ?, 'dead', ?)",
            rows,
        )
        self._many(
            "INSERT INTO set_aside (key, kind, seq, sender, reason, raw, at) VALUES (?, 'unreadable', ?, ?, ?, ?, ?)",
            [(item.key, item.seq, clean(item.sender), item.reason, clean(item.raw), now) for item in items],
        )

    def fill_bodies(self, messages: Iterable[Message], now: float) -> None:
        """Bodies for stubs imported from a previous release (a no-op for any message already whole)."""
        names = BODY_COLUMNS[1:]  # all but the id, which comes last, for the WHERE
        self._many(
            f"UPDATE messages SET {', '.join(f'{c} = ?' for c in names)} WHERE id = ? AND body IS NULL",
            [(*cols[1:], cols[0]) for cols in map(body_columns, messages)],
        )

    def confirm_shown(self, ids: Sequence[str]) -> None:
        """The run that leased these printed them: `ack` may now finish them."""
        for marks, chunk in in_chunks(ids):  # one statement a chunk: a large check confirms thousands
            self._exec(
                f"UPDATE messages SET state = 'shown', ever_shown = 1 WHERE +state = 'leased' AND id IN ({marks})",
                chunk,
            )

    def refused_auto_replies(self, marker: str, since: float) -> list[tuple[str, str, str]]:
        """Auto-reply intents marked `marker` (refused, to be sent later) since `since`:
        (message id, recipient, kind), oldest first."""
        return [
            (r[0], r[1], r[2])
            for r in self._read(
                "SELECT message_id, recipient, kind FROM auto_replies WHERE sent_id = ? AND at >= ?"
                " ORDER BY at LIMIT 100",
                (marker, since),
            )
        ]

    def record_reply_sent(self, message_id: str, sent_id: str) -> None:
        self._exec("UPDATE auto_replies SET sent_id = ? WHERE message_id = ?", (sent_id, message_id))

    def record_sent(
        self,
        sent_id: str,
        to: str | None,
        type_: str | None,
        payload: dict[str, Any],
        reply_to: str | None,
        kind: str,
        now: float,
    ) -> None:
        self._exec(
            "INSERT OR IGNORE INTO sent VALUES (?, ?, ?, ?, ?, ?, ?)",
            (sent_id, clean(to), clean(type_ or "chat"), json.dumps(payload), clean(reply_to), kind, now),
        )

    # pruning -----------------------------------------------------------------

    def prune_due(self, now: float) -> bool:
        """Whether a pruning pass should run: hourly, and until the last one finished."""
        return not 0 <= now - self.get_number("pruned_at") < PRUNE_INTERVAL  # (a clock gone back still prunes)

    def prune_step(
        self, keep_ids: Iterable[str], now: float, days: float, most: int, open_days: float
    ) -> tuple[int, int]:
        """One bounded step of a pruning pass, inside `write()`: at most PRUNE_STEP rows each.
        Drops finished messages older than `days` or beyond the newest `most`, never one in
        `keep_ids` (still at the hub) nor an unfinished one; dead-letters messages pending for
        more than `open_days` (never returned to the agent: kept, listed as dead letters).
        Returns (rows dropped, messages dead-lettered); (0, 0): nothing left to prune."""
        self._exec("CREATE TEMP TABLE IF NOT EXISTS keep (id TEXT PRIMARY KEY)")
        self._exec("DELETE FROM temp.keep")
        self._many("INSERT OR IGNORE INTO temp.keep VALUES (?)", [(i,) for i in keep_ids])
        cutoff = now - days * 86400
        victims = [
            r[0]
            for r in self._read(
                "SELECT rowid FROM messages INDEXED BY messages_finished WHERE finished_at < ?"
                f" AND state IN {_FINISHED} AND id NOT IN (SELECT id FROM temp.keep) LIMIT ?",
                (cutoff, PRUNE_STEP),
            )
        ]
        top = self._read("SELECT rowid FROM messages ORDER BY rowid DESC LIMIT 1 OFFSET ?", (most,))
        if top and len(victims) < PRUNE_STEP:
            victims += [
                r[0]
                for r in self._read(
                    f"SELECT rowid FROM messages INDEXED BY messages_state WHERE state IN {_FINISHED} AND rowid <= ?"
                    " AND id NOT IN (SELECT id FROM temp.keep) LIMIT ?",
                    (top[0][0], PRUNE_STEP - len(victims)),
                )
            ]
        gone = 0
        for marks, chunk in in_chunks(sorted(set(victims))):
            gone += self._exec(f"DELETE FROM messages WHERE rowid IN ({marks})", chunk).rowcount
        aged = self._exec(
            "UPDATE messages SET state = 'dead', finished_at = ?, reason = COALESCE(reason, '') || ? WHERE rowid IN ("
            " SELECT rowid FROM messages INDEXED BY messages_pending_age WHERE state = 'pending' AND received_at < ?"
            " LIMIT ?)",
            (now, f"; never returned within open_max_days ({open_days:g})", now - open_days * 86400, PRUNE_STEP),
        ).rowcount
        if aged:  # said by the next check that writes (`take_aged_out`)
            self.set_meta("aged_out", int(self.get_number("aged_out")) + aged)
        gone += self._exec(
            "DELETE FROM auto_replies WHERE rowid IN (SELECT rowid FROM auto_replies WHERE at < ?"
            " AND message_id NOT IN (SELECT id FROM messages) LIMIT ?)",
            (cutoff, PRUNE_STEP),
        ).rowcount
        newest_sent = self._read("SELECT sent_at FROM sent ORDER BY sent_at DESC LIMIT 1 OFFSET ?", (most,))
        sent_cutoff = max(cutoff, newest_sent[0][0]) if newest_sent else cutoff
        gone += self._exec(
            "DELETE FROM sent WHERE rowid IN (SELECT rowid FROM sent WHERE sent_at < ? LIMIT ?)",
            (sent_cutoff, PRUNE_STEP),
        ).rowcount
        return gone, aged

    def take_aged_out(self) -> None:
        """Inside `write()`: the messages pruning dead-lettered for age since the last call, as
        one warning (each said once)."""
        aged = int(self.get_number("aged_out"))
        if aged:
            self.set_meta("aged_out", 0)
            self.warnings.append(
                f"dead-lettered {aged} message(s) left pending beyond open_max_days without being returned;"
                " see `agentcom inbox --state dead`"
            )

    def vacuum_step(self) -> int:
        """Give up to VACUUM_STEP free pages back to the file system (outside a transaction);
        the free pages left. (0 for a store made before migration 6 and not vacuumed since:
        its free pages are reused, never given back.)"""
        if self._writing or self._read("PRAGMA auto_vacuum")[0][0] != 2:
            return 0
        try:  # (executescript: execute() frees a single page)
            self._db.executescript(f"PRAGMA incremental_vacuum({VACUUM_STEP});")
        except sqlite3.Error:
            return 0  # busy: the next step
        return int(self._read("PRAGMA freelist_count")[0][0])

    # finishing messages ------------------------------------------------------

    def shown_open(self, through: int | None = None) -> list[sqlite3.Row]:
        """Messages the agent was shown and has not finished (bare ack, ack --through)."""
        sql = "SELECT rowid, * FROM messages WHERE state IN ('leased', 'shown') AND ever_shown = 1"
        params: tuple[Any, ...] = ()
        if through is not None:
            sql += " AND seq <= ?"
            params = (through,)
        return self._message_rows(sql + " ORDER BY seq, rowid", params)

    def finish(self, ids: Sequence[str], state: str, now: float, reason: str | None = None) -> None:
        assert state in FINISHED_STATES
        self._many(
            f"UPDATE messages SET state = ?, finished_at = ?, reason = COALESCE(?, reason) WHERE id = ? AND state IN "
            f"{OPEN_SQL}",
            [(state, now, reason, i) for i in ids],
        )

    def defer(self, ids: Sequence[str], until: float, now: float) -> None:
        self._many(
            f"UPDATE messages SET state = 'deferred', due = ?, span = ? WHERE id = ? AND state IN {OPEN_SQL}",
            [(until, until - now, i) for i in ids],
        )

    def deliverable_ids(self, now: float) -> list[str]:
        """Attention messages a check or wake would return now."""
        return [
            r[0]
            for r in self._read(
                "SELECT id FROM messages WHERE state = 'pending' AND disposition = 'attention' UNION ALL"
                f" SELECT id FROM messages WHERE state IN {OPEN_SQL} AND state != 'pending' AND {_DUE_OR_OVER}"
                " AND disposition = 'attention'",
                (now,),
            )
        ]

    def deliverable_count(self, now: float) -> int:
        """How many `deliverable_ids` gives, from the counters and the due index (the watch asks often)."""
        due = self._read(
            f"SELECT COUNT(*) FROM messages WHERE state IN {OPEN_SQL} AND state != 'pending' AND due <= ?"
            " AND disposition = 'attention'",
            (now,),
        )[0][0]
        return self.counted("attention", "pending") + int(due)

    def restore(self, records: dict[str, Record], shown: bool = False) -> None:
        """Undo leases taken for a delivery that failed (a wake the gateway refused):
        the messages are as they were, so `check` or the next wake returns them. With `shown`,
        also those marked shown when handed over (they stay `ever_shown`: `ack` takes them)."""
        states = "('leased', 'shown')" if shown else "('leased')"
        self._many(
            f"UPDATE messages SET state = ?, deliveries = ?, expired = ?, due = ?, span = ? WHERE id = ? AND state IN"
            f" {states}",
            [(r.state, r.deliveries, r.expired, r.due, r.span, msg_id) for msg_id, r in records.items()],
        )

    # the one-time import of 0.1's state (legacy.py) --------------------------

    def import_stubs(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Messages known to 0.1 without their bodies: (id, seq, sender, type, text, disposition,
        rule, reason, state, priority, broadcast, deliveries, expired, ever_shown, due,
        finished_at, received_at). The next poll fills in the bodies of those still at the hub."""
        self._many(
            "INSERT OR IGNORE INTO messages (id, seq, sender, type, text, disposition, rule, reason, state, priority,"
            " broadcast, deliveries, expired, ever_shown, due, finished_at, received_at, via) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'import')",
            rows,
        )

    def set_peer(
        self, agent_id: str, status: str | None, timestamp: int | None, message_id: str | None, at: float
    ) -> None:
        """A peer's latest status (the roster `agentcom log` shows)."""
        self._exec(
            "INSERT OR REPLACE INTO peers VALUES (?, ?, ?, ?, ?)",
            (clean(agent_id), clean(status), timestamp, clean(message_id), at),
        )

    def note_statuses(self, statuses: Mapping[str, str], now: float) -> None:
        """Peers' statuses from the hub's agent list: kept (as of `now`) where they differ from
        the roster's."""
        kept = self.peers()
        for agent_id, status in statuses.items():
            if (kept.get(clean(agent_id) or "") or {}).get("status") != clean(status):
                self.set_peer(agent_id, status, None, None, now)

    def add_reply_times(self, sender: str, times: Sequence[float]) -> None:
        """Auto-replies already sent to `sender` (they count against its per-minute budget)."""
        self._many(
            "INSERT OR IGNORE INTO auto_replies VALUES (?, ?, 'imported', ?, NULL)",
            [(f"import:{sender}:{n}", sender, at) for n, at in enumerate(times)],
        )
