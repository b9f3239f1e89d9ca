"""SQLite storage of the local hub: tokens and mailboxes.

One connection guarded by one lock: the hub is a small test and demo server, and
serialising every statement makes the global seq counter trivially race-free.
WAL mode with commit-before-reply means a message the hub answered 200 for
survives SIGKILL of the hub process.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import platformdirs

from ..files import create_private

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_agent ON tokens(agent_id);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER NOT NULL,
    recipient TEXT NOT NULL,
    id TEXT NOT NULL,
    sender TEXT NOT NULL,
    to_field TEXT,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    reply_to TEXT,
    timestamp INTEGER NOT NULL,
    PRIMARY KEY (recipient, seq)
);
-- every message routed, as the real hub's MessageHistory keeps it (GET /api/messages)
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    sender TEXT NOT NULL,
    to_field TEXT,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    reply_to TEXT,
    timestamp INTEGER NOT NULL
);
"""
HISTORY_MAX = 10_000  # the real hub's MessageHistory keeps the newest 10,000
HISTORY_PAGE = 200  # and answers at most 200 a query (default 50)


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir("agentcom")) / "hub.sqlite3"


def new_token() -> str:
    return secrets.token_hex(32)


def is_broadcast(to: str | None) -> bool:
    return to is None or to == "broadcast"


class HubStore:
    """Tokens and mailboxes, with the real hub's seq semantics."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        mailbox_cap: int = 100,
        ttl_days: float = 7.0,
        clock: Callable[[], float] = time.time,
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The database holds every token: private from the start (SQLite gives its -wal
        # and -shm files the same mode).
        create_private(self.path)
        self.clock = clock  # seconds; injected by tests of the TTL
        self.mailbox_cap = mailbox_cap
        self.ttl_ms = int(ttl_days * 86_400_000)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        # The real hub resumes its counter from the highest seq still stored in any
        # mailbox, so it goes back to 0 once everything was acked. Reproduced on purpose.
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM messages").fetchone()
        self._seq = int(row[0])
        self._counts: dict[str, int] = {}  # cached mailbox sizes, so the cap check is O(1)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # tokens -------------------------------------------------------------

    def mint_token(self, agent_id: str) -> str:
        token = new_token()
        with self._lock:
            self._db.execute(
                "INSERT INTO tokens(token, agent_id, created_ms) VALUES (?, ?, ?)",
                (token, agent_id, self._now_ms()),
            )
        return token

    def register(self, agent_id: str) -> str | None:
        """Mint the first token of `agent_id`; None when it already has one."""
        token = new_token()
        with self._lock:
            if self._db.execute("SELECT 1 FROM tokens WHERE agent_id = ?", (agent_id,)).fetchone():
                return None
            self._db.execute(
                "INSERT INTO tokens(token, agent_id, created_ms) VALUES (?, ?, ?)",
                (token, agent_id, self._now_ms()),
            )
        return token

    def reset_token(self, agent_id: str) -> str | None:
        """Revoke every token of `agent_id` and mint a new one; None when it has none."""
        token = new_token()
        with self._lock:
            if not self._db.execute("SELECT 1 FROM tokens WHERE agent_id = ?", (agent_id,)).fetchone():
                return None
            self._db.execute("DELETE FROM tokens WHERE agent_id = ?", (agent_id,))
            self._db.execute(
                "INSERT INTO tokens(token, agent_id, created_ms) VALUES (?, ?, ?)", (token, agent_id, self._now_ms())
            )
        return token

    def agent_for_token(self, token: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT agent_id FROM tokens WHERE token = ?", (token,)).fetchone()
        return row[0] if row else None

    # messages -----------------------------------------------------------

    def post(
        self,
        sender: str,
        to: str | None,
        type_: str,
        payload: dict[str, Any],
        reply_to: str | None,
        skip: Collection[str] = (),
        now: int | None = None,
    ) -> str:
        """Store one message in every recipient's mailbox but those in `skip` (connected by
        WebSocket: it is pushed to them instead); returns its id. `now`: its timestamp (ms),
        the one its pushed copies carry too."""
        msg_id = secrets.token_hex(8)
        with self._lock:
            if is_broadcast(to):
                # One copy per token, as the real hub stores it (its token list has one entry
                # per token): an agent holding two tokens finds each broadcast twice.
                rows = self._db.execute(
                    "SELECT agent_id FROM tokens WHERE agent_id != ? ORDER BY agent_id", (sender,)
                ).fetchall()
                recipients = [r[0] for r in rows]
            else:
                recipients = [to]
        recipients = [r for r in recipients if r not in skip]
        self.enqueue(recipients, msg_id, sender, to, type_, payload, reply_to, self._now_ms() if now is None else now)
        return msg_id

    def enqueue(
        self,
        recipients: Collection[str],
        msg_id: str,
        sender: str,
        to: str | None,
        type_: str,
        payload: dict[str, Any],
        reply_to: str | None,
        timestamp: int,
    ) -> None:
        """Store one message (one id) in each of these mailboxes, each copy with its own seq."""
        body = json.dumps(payload, separators=(",", ":"))
        with self._lock:
            seq_before = self._seq
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO history(id, sender, to_field, type, payload, reply_to, timestamp)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (msg_id, sender, to, type_, body, reply_to, timestamp),
                )
                self._db.execute("DELETE FROM history WHERE seq <= (SELECT MAX(seq) FROM history) - ?", (HISTORY_MAX,))
                for recipient in recipients:
                    self._seq += 1
                    self._db.execute(
                        "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (self._seq, recipient, msg_id, sender, to, type_, body, reply_to, timestamp),
                    )
                    self._enforce_cap(recipient)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._seq = seq_before
                self._counts.clear()
                raise

    def history(
        self,
        sender: str | None = None,
        to: str | None = None,
        start_ms: int = 0,
        end_ms: int | None = None,
        cursor: int = 0,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """The routed messages after `cursor`, oldest first, as the real hub's
        `GET /api/messages` gives them (its filters, at most 200)."""
        where = ["seq > ?", "timestamp >= ?"]
        args: list[Any] = [cursor, start_ms]
        for column, value in (("sender", sender), ("to_field", to)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if end_ms is not None:
            where.append("timestamp <= ?")
            args.append(end_ms)
        with self._lock:
            rows = self._db.execute(
                f"SELECT seq, id, sender, to_field, type, payload, reply_to, timestamp FROM history"
                f" WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
                (*args, max(0, min(limit, HISTORY_PAGE))),
            ).fetchall()
        return [
            {
                "seq": seq,
                "id": msg_id,
                "from": sender_,
                "to": to_field,
                "type": type_,
                "payload": json.loads(payload),
                "reply_to": reply_to,
                "timestamp": ts,
            }
            for seq, msg_id, sender_, to_field, type_, payload, reply_to, ts in rows
        ]

    def _enforce_cap(self, recipient: str) -> None:
        # The real hub drops the oldest silently on overflow.
        count = self._counts.get(recipient)
        if count is None:
            count = self._db.execute("SELECT COUNT(*) FROM messages WHERE recipient = ?", (recipient,)).fetchone()[0]
        else:
            count += 1
        if count > self.mailbox_cap:
            self._db.execute(
                "DELETE FROM messages WHERE recipient = ? AND seq IN "
                "(SELECT seq FROM messages WHERE recipient = ? ORDER BY seq LIMIT ?)",
                (recipient, recipient, count - self.mailbox_cap),
            )
            count = self.mailbox_cap
        self._counts[recipient] = count

    def poll(self, agent_id: str, since: int) -> list[dict[str, Any]]:
        with self._lock:
            if self._db.execute("DELETE FROM messages WHERE timestamp < ?", (self._now_ms() - self.ttl_ms,)).rowcount:
                self._counts.clear()
            rows = self._db.execute(
                "SELECT id, sender, to_field, type, payload, reply_to, timestamp, seq FROM messages "
                "WHERE recipient = ? AND seq > ? ORDER BY seq",
                (agent_id, since),
            ).fetchall()
        return [
            {
                "id": r[0],
                "from": r[1],
                "to": r[2],
                "type": r[3],
                "payload": json.loads(r[4]),
                "reply_to": r[5],
                "timestamp": r[6],
                "seq": r[7],
            }
            for r in rows
        ]

    def ack(self, agent_id: str, up_to: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM messages WHERE recipient = ? AND seq <= ?", (agent_id, up_to))
            self._counts.pop(agent_id, None)
