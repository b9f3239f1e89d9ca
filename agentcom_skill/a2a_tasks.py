"""The A2A task table (watch, mode a2a): the tasks sent to an agent's A2A endpoint and the
messages each carries. Used only by the A2A wing (`a2a/`, and the `status` and `log` actions); it
reads and writes through the store's public query surface (`query`, `execute`,
`execute_many`, `id_chunks`), inside the caller's `store.write()`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from .delivery import Record
from .migrations import SCHEMA_COLUMNS
from .store import PRUNE_INTERVAL, MessageStore
from .store_db import OPEN_SQL, OVER_SQL, clean

A2A_OPEN_STATES = ("sending", "working", "answering")  # an A2A task not ended yet (migration 5's index: the same)
A2A_OPEN_SQL = "(" + ", ".join(f"'{state}'" for state in A2A_OPEN_STATES) + ")"


class A2ATasks:
    """The A2A task table of one store."""

    def __init__(self, store: MessageStore):
        self.store = store

    def handed(self, ids: Sequence[str]) -> set[str]:
        """Which of these messages A2A already took (carried by a task, or held back for `check`)."""
        out: set[str] = set()
        for marks, chunk in self.store.id_chunks(ids):
            sql = f"SELECT message_id FROM a2a_messages WHERE message_id IN ({marks})"
            out.update(r[0] for r in self.store.query(sql, chunk))
        return out

    def open_tasks(self) -> list[sqlite3.Row]:
        return self.store.query(f"SELECT * FROM a2a_tasks WHERE state IN {A2A_OPEN_SQL} ORDER BY next_at, id")

    def task(self, task: int) -> sqlite3.Row | None:
        rows = self.store.query("SELECT * FROM a2a_tasks WHERE id = ?", (task,))
        return rows[0] if rows else None

    def create(
        self, peer: str, context_id: str, reply_to: str, message_id: str, carried: dict[str, Record], now: float
    ) -> int:
        """A task about to be sent, with the messages it carries and their records before the lease."""
        cur = self.store.execute(
            "INSERT INTO a2a_tasks (peer, context_id, reply_to, message_id, state, created_at, next_at)"
            " VALUES (?, ?, ?, ?, 'sending', ?, ?)",
            (clean(peer), context_id, reply_to, message_id, now, now),
        )
        task = int(cur.lastrowid or 0)
        self.store.execute_many(
            "INSERT OR REPLACE INTO a2a_messages (message_id, task, prev) VALUES (?, ?, ?)",
            [(i, task, json.dumps([r.state, r.deliveries, r.expired, r.due])) for i, r in carried.items()],
        )
        return task

    def hold(self, ids: Sequence[str], note: str) -> None:
        """Held back by the loop guard: these wait for `check`, never for an A2A task."""
        self.store.execute_many(
            "INSERT OR IGNORE INTO a2a_messages (message_id, task, note) VALUES (?, NULL, ?)", [(i, note) for i in ids]
        )
        self.store.execute_many(
            f"UPDATE messages SET reason = COALESCE(reason, '') || ? WHERE id = ? AND state IN {OPEN_SQL}",
            [(f"; {note}", i) for i in ids],
        )

    def update(self, task: int, **changes: Any) -> None:
        # a task's own columns, less those fixed when it is made
        allowed = set(SCHEMA_COLUMNS["a2a_tasks"]) - {"id", "peer", "context_id", "reply_to", "created_at"}
        assert changes and set(changes) <= allowed, changes
        names = sorted(changes)
        self.store.execute(
            f"UPDATE a2a_tasks SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?",
            [changes[n] for n in names] + [task],
        )

    def carried(self, task: int) -> list[str]:
        return [
            r[0] for r in self.store.query("SELECT message_id FROM a2a_messages WHERE task = ? ORDER BY rowid", (task,))
        ]

    def release(self, task: int) -> None:
        """Undo a task that never reached the agent: its messages are as they were before it
        leased them (for `check` and a later task), and the task is forgotten."""
        rows = self.store.query("SELECT message_id, prev FROM a2a_messages WHERE task = ?", (task,))
        records = {}
        for msg_id, prev in rows:
            state, deliveries, expired, due = json.loads(prev)
            records[msg_id] = Record(state, deliveries, expired, due)
        self.store.restore(records)
        self.store.execute("DELETE FROM a2a_messages WHERE task = ?", (task,))
        self.store.execute("DELETE FROM a2a_tasks WHERE id = ?", (task,))

    def give_back(self, ids: Sequence[str], now: float, note: str) -> None:
        """A task that failed: its messages come back to `check` now, with why in their reason."""
        self.store.execute_many(
            "UPDATE messages SET due = ?, reason = COALESCE(reason, '') || ? WHERE id = ? AND state IN ('leased', "
            "'shown')",
            [(now, f"; {note}", i) for i in ids],
        )

    def extend_leases(self, now: float, lease_seconds: float) -> int:
        """Messages of tasks still running stay leased to them: `check` does not hand them out."""
        return self.store.execute(
            "UPDATE messages SET due = ?1 + ?2, span = ?2 WHERE state IN ('leased', 'shown')"
            f" AND (due < ?1 + ?2 / 2 OR {OVER_SQL}) AND id IN ("
            " SELECT a.message_id FROM a2a_messages a JOIN a2a_tasks t ON a.task = t.id"
            f" WHERE t.state IN {A2A_OPEN_SQL})",
            (now, lease_seconds),
        ).rowcount

    def answer_times(self, since: float) -> dict[str, list[float]]:
        """Automatic answers sent back per peer since `since` (the loop guard's budget)."""
        out: dict[str, list[float]] = {}
        sql = (
            "SELECT peer, finished_at FROM a2a_tasks"
            " WHERE outcome IN ('answered', 'maybe_answered') AND finished_at > ?"
        )
        for peer, at in self.store.query(sql, (since,)):
            out.setdefault(peer, []).append(at)
        return out

    def summary(self) -> dict[str, Any]:
        """For `status`: tasks in flight, answers sent, silences, failures, held messages, the last failure."""
        by_state: dict[str, int] = {
            r[0]: r[1] for r in self.store.query("SELECT state, COUNT(*) FROM a2a_tasks GROUP BY state")
        }
        by_outcome: dict[str, int] = {
            r[0]: r[1]
            for r in self.store.query(
                "SELECT outcome, COUNT(*) FROM a2a_tasks WHERE outcome IS NOT NULL GROUP BY outcome"
            )
        }
        held = self.store.query(
            f"SELECT COUNT(*) FROM a2a_messages a JOIN messages m ON m.id = a.message_id"
            f" WHERE a.task IS NULL AND m.state IN {OPEN_SQL}"
        )[0][0]
        last = self.store.query(
            "SELECT finished_at, outcome, error FROM a2a_tasks WHERE state = 'failed' ORDER BY finished_at DESC LIMIT 1"
        )
        return {
            "in_flight": sum(by_state.get(s, 0) for s in A2A_OPEN_STATES),
            "answered": by_outcome.get("answered", 0),
            "maybe_answered": by_outcome.get("maybe_answered", 0),
            "no_reply": by_outcome.get("no_reply", 0) + by_outcome.get("replied_already", 0),
            "failed": by_state.get("failed", 0),
            "held": held,
            "last_failure": {"at": last[0][0], "outcome": last[0][1], "error": last[0][2]} if last else None,
        }

    def failures(self, limit: int) -> list[dict[str, Any]]:
        """The latest A2A tasks that ended without an answer, newest first, with what they carried."""
        rows = self.store.query(
            "SELECT id, peer, outcome, error, finished_at, said FROM a2a_tasks WHERE state = 'failed'"
            " ORDER BY finished_at DESC LIMIT ?",
            (limit,),
        )
        return [
            {
                "task": r[0],
                "peer": r[1],
                "outcome": r[2],
                "error": r[3],
                "said": r[5],  # the agent's side's words: only ever shown fenced to an LLM
                "at": r[4],
                "ids": self.carried(r[0]),
            }
            for r in rows
        ]

    def prune(self, now: float, days: float) -> None:
        """Finished tasks older than `days`, and the records of messages no longer kept; hourly."""
        if 0 <= now - float(self.store.get_meta("a2a_pruned_at", 0) or 0) < PRUNE_INTERVAL:
            return
        self.store.set_meta("a2a_pruned_at", now)
        self.store.execute("DELETE FROM a2a_messages WHERE message_id NOT IN (SELECT id FROM messages)")
        self.store.execute(
            "DELETE FROM a2a_tasks WHERE state IN ('done', 'failed') AND finished_at < ?"
            " AND id NOT IN (SELECT task FROM a2a_messages WHERE task IS NOT NULL)",
            (now - days * 86400,),
        )
