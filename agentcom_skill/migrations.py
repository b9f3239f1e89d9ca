"""The message store's schema: numbered migrations, append only (as simonw/llm keeps them).

Migration N is `MIGRATIONS[N - 1]`, a (name, SQL) pair; `PRAGMA user_version` is the number
of the last one applied, and each is recorded in the `migrations` table. A store on disk was
made by these exact statements in this order: never edit one, never reorder them; a change
of schema is a new migration at the end (and `SCHEMA_COLUMNS` says the columns it leaves).

A few migrations are built in code, named by a word in place of their SQL (`migrate` reads
it): "FTS5" (the full-text index, where SQLite has FTS5), "LAZY_FTS" (the index brought up to
date by `search`, only where "FTS5" made one), "SCALE" (`_SCALE_SQL`, then incremental
auto-vacuum). The store (`store.py`) opens the file and runs these inside its migrating
transaction; this module holds no connection and imports nothing of the package.
"""

from __future__ import annotations

import sqlite3
import time

__all__ = ["MIGRATIONS", "SCHEMA_COLUMNS", "check_schema", "migrate", "statements"]

MIGRATIONS: list[tuple[str, str]] = [
    (
        "messages, sent messages, auto-reply intents, peers, meta",
        """
        CREATE TABLE messages (
            id TEXT PRIMARY KEY,
            seq INTEGER,
            sender TEXT,
            recipient TEXT,
            type TEXT,
            body TEXT,                  -- the message as the hub sent it (ASCII JSON); NULL for an imported stub
            reply_to TEXT,
            timestamp INTEGER,
            via TEXT NOT NULL,          -- poll | push | import
            received_at REAL NOT NULL,
            text TEXT,                  -- payload.text, or the payload as one line (search, logs)
            -- sender, recipient, type and text are copies for queries, cleaned of lone surrogates
            disposition TEXT NOT NULL,  -- attention | auto_reply | store | drop
            rule INTEGER,
            reason TEXT,
            state TEXT NOT NULL,        -- see delivery.py
            priority TEXT NOT NULL DEFAULT 'normal',
            broadcast INTEGER NOT NULL DEFAULT 0,
            deliveries INTEGER NOT NULL DEFAULT 0,
            expired INTEGER NOT NULL DEFAULT 0,
            ever_shown INTEGER NOT NULL DEFAULT 0,
            due REAL,
            finished_at REAL
        );
        CREATE INDEX messages_open ON messages(state) WHERE state IN ('pending', 'leased', 'shown', 'deferred');
        CREATE INDEX messages_seq ON messages(seq);
        CREATE INDEX messages_reply_to ON messages(reply_to);
        CREATE INDEX messages_finished ON messages(finished_at);
        CREATE TABLE sent (
            id TEXT PRIMARY KEY,
            recipient TEXT,
            type TEXT,
            payload TEXT NOT NULL,
            reply_to TEXT,
            kind TEXT NOT NULL,         -- send | reply | auto_reply
            sent_at REAL NOT NULL
        );
        CREATE INDEX sent_reply_to ON sent(reply_to);
        CREATE INDEX sent_at ON sent(sent_at);
        -- committed before the auto-reply is sent: at most one per message, even across kill -9
        CREATE TABLE auto_replies (
            message_id TEXT PRIMARY KEY,
            recipient TEXT NOT NULL,
            kind TEXT NOT NULL,
            at REAL NOT NULL,
            sent_id TEXT
        );
        CREATE INDEX auto_replies_at ON auto_replies(at);
        CREATE TABLE peers (
            agent_id TEXT PRIMARY KEY,
            status TEXT,
            timestamp INTEGER,
            message_id TEXT,
            at REAL NOT NULL
        );
        CREATE TABLE meta (key TEXT PRIMARY KEY, value);
        """,
    ),
    (
        "full-text search over message text and sender (FTS5 where SQLite has it)",
        "FTS5",  # built in code: an SQLite without FTS5 gets the plain fallback
    ),
    (
        "the full-text index is brought up to date by search, not by every insert",
        "LAZY_FTS",  # built in code: only where migration 2 made an index
    ),
    (
        "rows set aside: unreadable messages from the hub, damaged rows of this store",
        """
        CREATE TABLE set_aside (
            key TEXT NOT NULL,          -- the message id, or unreadable-seq-N
            kind TEXT NOT NULL,         -- unreadable | damaged
            seq INTEGER,
            sender TEXT,
            reason TEXT NOT NULL,
            raw TEXT,                   -- what was received or stored, for a person
            at REAL NOT NULL
        );
        CREATE INDEX set_aside_key ON set_aside(key);
        """,
    ),
    (
        "A2A tasks handed to an agent by `agentcom watch` (mode a2a), and the messages each carries",
        """
        CREATE TABLE a2a_tasks (
            id INTEGER PRIMARY KEY,
            peer TEXT NOT NULL,             -- the AgentCom sender: the answer goes back to it
            context_id TEXT NOT NULL,       -- the A2A contextId (one task in flight per context)
            reply_to TEXT NOT NULL,         -- the newest message carried: the answer replies to it
            message_id TEXT NOT NULL UNIQUE,-- the A2A messageId of the latest send; new for every send
            task_id TEXT,                   -- the agent's task id, stored before waiting on it
            state TEXT NOT NULL,            -- sending | working | answering | done | failed
            attempts INTEGER NOT NULL DEFAULT 0,  -- sends that may have reached the agent
            polls INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            sent_at REAL,                   -- the latest send began (NULL: not tried since the last loss)
            accepted_at REAL,
            next_at REAL NOT NULL,          -- when to send, poll or deliver next
            finished_at REAL,
            answer TEXT,                    -- the agent's final text, kept until delivered
            -- outcome: answered | no_reply | replied_already | failed | rejected | timeout | lost
            outcome TEXT,
            sent_id TEXT,                   -- the hub id of the answer sent back
            error TEXT
        );
        CREATE INDEX a2a_tasks_open ON a2a_tasks(state) WHERE state IN ('sending', 'working', 'answering');
        CREATE INDEX a2a_tasks_peer ON a2a_tasks(peer, finished_at);
        -- a message is handed to A2A at most once (a lost task is resent under a new messageId)
        CREATE TABLE a2a_messages (
            message_id TEXT PRIMARY KEY,
            task INTEGER,                   -- a2a_tasks.id; NULL: held back for `check` (the loop guard)
            prev TEXT,                      -- its delivery record before the task (JSON): undoes an unsent task
            note TEXT
        );
        CREATE INDEX a2a_messages_task ON a2a_messages(task);
        """,
    ),
    (
        "the length of each lease and defer beside its end: a clock set back cannot hold one for its jump",
        "ALTER TABLE messages ADD COLUMN span REAL;  -- seconds the lease or defer that set due was for",
    ),
    (
        "the channels and the room this agent joined (groups.py), with what of each needs it",
        """
        CREATE TABLE groups (
            address TEXT PRIMARY KEY,       -- "#name" (normalised) or "@room"
            attend TEXT NOT NULL,           -- mentions | all | none (tier0.ATTEND)
            joined_at REAL NOT NULL
        );
        """,
    ),
    (
        "the identity of an A2A answer, stored before its POST: a restart checks before sending it again",
        """
        -- set (and the state answering): a POST of the answer may have reached the hub
        ALTER TABLE a2a_tasks ADD COLUMN answer_key TEXT;
        -- what the agent's side said about a failure (text a peer can steer), apart from `error` (ours)
        ALTER TABLE a2a_tasks ADD COLUMN said TEXT;
        """,
    ),
    (
        "indexes and counters, so that checks and reads cost the same whatever the store keeps;"
        " space freed by pruning goes back to the file system",
        "SCALE",  # built in code: _SCALE_SQL, then auto_vacuum (see _prepare)
    ),
]

_SCALE_SQL = """
        DROP INDEX messages_open;
        -- what is due (a lease or defer ended), what is in lease: the query repeats this WHERE
        CREATE INDEX messages_due ON messages(state, due) WHERE state IN ('pending', 'leased', 'shown', 'deferred');
        -- the pending messages in attention order (delivery.attention_order), the first N at once
        CREATE INDEX messages_pending ON messages(
            (CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 ELSE 2 END), broadcast) WHERE state = 'pending';
        CREATE INDEX messages_pending_age ON messages(received_at) WHERE state = 'pending';
        CREATE INDEX messages_bodiless ON messages(state) WHERE body IS NULL;
        -- inbox and log filters, each newest first by rowid
        CREATE INDEX messages_state ON messages(state);
        CREATE INDEX messages_sender ON messages(sender);
        CREATE INDEX messages_type ON messages(type);
        CREATE INDEX messages_disposition ON messages(disposition);
        CREATE INDEX messages_received ON messages(received_at);
        -- rows by (disposition, state), kept by triggers: status and inbox count without a scan
        CREATE TABLE message_counts (
            disposition TEXT NOT NULL,
            state TEXT NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (disposition, state)
        );
        -- (INSERT OR IGNORE, then UPDATE: an upsert here tripled the cost of storing a message)
        CREATE TRIGGER message_counts_insert AFTER INSERT ON messages BEGIN
            INSERT OR IGNORE INTO message_counts VALUES (new.disposition, new.state, 0);
            UPDATE message_counts SET n = n + 1 WHERE disposition = new.disposition AND state = new.state;
        END;
        CREATE TRIGGER message_counts_delete AFTER DELETE ON messages BEGIN
            UPDATE message_counts SET n = n - 1 WHERE disposition = old.disposition AND state = old.state;
        END;
        CREATE TRIGGER message_counts_update AFTER UPDATE OF disposition, state ON messages
        WHEN old.disposition IS NOT new.disposition OR old.state IS NOT new.state BEGIN
            UPDATE message_counts SET n = n - 1 WHERE disposition = old.disposition AND state = old.state;
            INSERT OR IGNORE INTO message_counts VALUES (new.disposition, new.state, 0);
            UPDATE message_counts SET n = n + 1 WHERE disposition = new.disposition AND state = new.state;
        END;
        INSERT INTO message_counts SELECT disposition, state, COUNT(*) FROM messages GROUP BY disposition, state;
"""

_FTS_SQL = """
CREATE VIRTUAL TABLE messages_fts USING fts5(text, sender, content='messages', content_rowid='rowid');
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, text, sender) VALUES (new.rowid, new.text, new.sender);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, text, sender) VALUES ('delete', old.rowid, old.text, old.sender);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF text, sender ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, text, sender) VALUES ('delete', old.rowid, old.text, old.sender);
    INSERT INTO messages_fts(rowid, text, sender) VALUES (new.rowid, new.text, new.sender);
END;
INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
"""

# Migration 3: inserting into the index with every message was most of a large check's
# cost, so rows are indexed when `search` runs (`index_for_search`). Meta `fts_rowid` is the
# highest rowid indexed: the delete and update triggers touch the index only at or below it,
# and a delete that lowers the table's highest rowid lowers it too (SQLite may then hand
# that rowid to a new, unindexed row).
_LAZY_FTS_SQL = """
DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_delete;
DROP TRIGGER messages_fts_update;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, text, sender)
        SELECT 'delete', old.rowid, old.text, old.sender
        WHERE old.rowid <= (SELECT value FROM meta WHERE key = 'fts_rowid');
    UPDATE meta SET value = (SELECT COALESCE(MAX(rowid), 0) FROM messages)
        WHERE key = 'fts_rowid' AND value > (SELECT COALESCE(MAX(rowid), 0) FROM messages);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF text, sender ON messages
WHEN old.rowid <= (SELECT value FROM meta WHERE key = 'fts_rowid') BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, text, sender) VALUES ('delete', old.rowid, old.text, old.sender);
    INSERT INTO messages_fts(rowid, text, sender) VALUES (new.rowid, new.text, new.sender);
END;
INSERT OR REPLACE INTO meta VALUES ('fts_rowid', (SELECT COALESCE(MAX(rowid), 0) FROM messages));
"""

# The columns of our tables at the current schema, in order (a test checks them against the migrations).
SCHEMA_COLUMNS = {
    "messages": (
        "id",
        "seq",
        "sender",
        "recipient",
        "type",
        "body",
        "reply_to",
        "timestamp",
        "via",
        "received_at",
        "text",
        "disposition",
        "rule",
        "reason",
        "state",
        "priority",
        "broadcast",
        "deliveries",
        "expired",
        "ever_shown",
        "due",
        "finished_at",
        "span",
    ),
    "sent": ("id", "recipient", "type", "payload", "reply_to", "kind", "sent_at"),
    "auto_replies": ("message_id", "recipient", "kind", "at", "sent_id"),
    "peers": ("agent_id", "status", "timestamp", "message_id", "at"),
    "meta": ("key", "value"),
    "set_aside": ("key", "kind", "seq", "sender", "reason", "raw", "at"),
    "a2a_tasks": (
        "id",
        "peer",
        "context_id",
        "reply_to",
        "message_id",
        "task_id",
        "state",
        "attempts",
        "polls",
        "created_at",
        "sent_at",
        "accepted_at",
        "next_at",
        "finished_at",
        "answer",
        "outcome",
        "sent_id",
        "error",
        "answer_key",
        "said",
    ),
    "a2a_messages": ("message_id", "task", "prev", "note"),
    "groups": ("address", "attend", "joined_at"),
    "message_counts": ("disposition", "state", "n"),
}
_COLUMNS_SQL = (
    "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p"
    " WHERE m.type = 'table' ORDER BY m.name, p.cid"
)


def migrate(db: sqlite3.Connection, number: int) -> None:
    """Apply migration `number` (inside the migrating transaction) and record it."""
    name, sql = MIGRATIONS[number - 1]
    if sql == "FTS5":
        _create_fts(db)
    elif sql == "SCALE":
        for statement in statements(_SCALE_SQL):
            db.execute(statement)
        if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            # Takes effect with the next VACUUM (a new store has it from the start)
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('vacuum_pending', 1)")
    elif sql == "LAZY_FTS":
        fts = db.execute("SELECT value FROM meta WHERE key = 'fts'").fetchone()
        if fts is not None and fts[0] == 1:
            for statement in statements(_LAZY_FTS_SQL):
                db.execute(statement)
    else:
        for statement in statements(sql):
            db.execute(statement)
    db.execute("INSERT INTO migrations VALUES (?, ?, ?)", (number, name, time.time()))
    db.execute(f"PRAGMA user_version = {number}")


def check_schema(db: sqlite3.Connection) -> None:
    """A store at our schema version must have our tables and columns (a renamed column made
    every command fail): anything else is treated like a corrupt file."""
    found: dict[str, list[str]] = {}
    for table, column in db.execute(_COLUMNS_SQL):  # one query for every table
        found.setdefault(table, []).append(column)
    for table, columns in SCHEMA_COLUMNS.items():
        if tuple(found.get(table, ())) != columns:
            raise sqlite3.DatabaseError(f"table {table} does not have this version's columns")


def _create_fts(db: sqlite3.Connection) -> None:
    try:
        db.execute("CREATE VIRTUAL TABLE temp.fts_probe USING fts5(x)")
        db.execute("DROP TABLE temp.fts_probe")
    except sqlite3.OperationalError:
        db.execute("INSERT OR REPLACE INTO meta VALUES ('fts', 0)")
        return
    for statement in statements(_FTS_SQL):
        db.execute(statement)
    db.execute("INSERT OR REPLACE INTO meta VALUES ('fts', 1)")


def statements(sql: str) -> list[str]:
    """Split a migration script into statements (triggers keep their inner semicolons)."""
    out, current = [], []
    for line in sql.strip().splitlines():
        if line.strip().startswith("--"):
            continue
        current.append(line)
        joined = "\n".join(current).strip()
        if joined.endswith(";") and sqlite3.complete_statement(joined):
            out.append(joined)
            current = []
    if "\n".join(current).strip():
        out.append("\n".join(current))
    return out
