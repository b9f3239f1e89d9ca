"""The local message store of one agent at one hub: SQLite, one file, mode 0600.

It keeps every message this agent received (bodies insert-only, keyed by message id; the
hub's seq is stored but is never the key), its delivery state and Tier 0 disposition,
every message the agent sent, the auto-replies it committed to, and peers' statuses.

Concurrency: every change is one short `BEGIN IMMEDIATE` transaction, and nothing holds a
transaction across the network. SQLite's lock serialises writers; a writer that cannot get
it within `busy_timeout` raises `BusyError` (exit 7). Readers never block (WAL).

Schema changes are numbered migrations (`migrations.py`), applied once each on open and recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .delivery import (
    CLOCK_SLACK,
    FINISHED_STATES,
    LONGEST_SPAN,
    OPEN_STATES,
    CheckPlan,
    OpenMessage,
    Record,
    StoreView,
    bounded_due,
    summary_text,
)
from .errors import BusyError, StateError, UsageError
from .files import create_private, make_private_folder, refuse_links, shared_folder_warning
from .message import Message, Unreadable
from .migrations import MIGRATIONS, check_schema, migrate
from .render import ambiguous_ref_text
from .stored import inspect_row, open_record, raw_row, row_dict, row_message

__all__ = ["MessageStore", "DB_NAME", "clean", "row_dict", "row_message"]

DB_NAME = "messages.sqlite3"
T = TypeVar("T")

OPEN_SQL = "(" + ", ".join(f"'{state}'" for state in OPEN_STATES) + ")"  # SQL lists of delivery.py's states
# A lease or defer over at ?1 (a time): its end has come, or it ends further off than its
# length allows (taken while the clock ran ahead): `delivery.bounded_due` in SQL.
OVER_SQL = f"(due <= ?1 OR due > ?1 + COALESCE(span, {LONGEST_SPAN!r}) + {CLOCK_SLACK!r})"


# The same, as two ranges of `due` the index serves (the second a superset, refined by
# delivery.bounded_due when the rows are read).
def _deferred_over(row: Any, now: float) -> bool:
    """A deferred row whose defer has ended (or was taken while the clock ran ahead)."""
    due = bounded_due(row["due"], row["span"], now) if row["due"] is not None else None
    return row["state"] == "deferred" and due is not None and due <= now


_DUE_OR_OVER = f"(due <= ?1 OR (due > ?1 + {CLOCK_SLACK!r} AND {OVER_SQL}))"
_FINISHED = "(" + ", ".join(f"'{state}'" for state in FINISHED_STATES) + ")"
# tier0.attention_order in SQL: the expression of migration 6's index messages_pending, exactly
_PENDING_ORDER = "(CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 ELSE 2 END), broadcast, rowid"
# What history lists: every message but the bare ids 0.1 knew without a sender (a poison record
# whose sender could not be read is listed: it is kept for a person)
# ... nor what was said in a channel or the room we had not joined or had left (tier0 row 10):
# kept only as an id seen, so the hub is acked past it and it is never taken in again.
_LISTED = "((sender IS NOT NULL OR via IS NOT 'import') AND NOT (disposition = 'drop' AND rule IS 10))"
PRUNE_INTERVAL = 3600.0  # seconds between pruning passes
ID_CHUNK = 500  # ids per `IN (?, ...)`: well under SQLite's host-parameter limit (999 before 3.32)
PRUNE_STEP = 500  # rows one pruning transaction deletes or ages out at most (a short write)
VACUUM_STEP = 256  # free pages one pruning step gives back to the file system
VACUUM_AT_OPEN_BYTES = 64 * 1024 * 1024  # an older store this small is vacuumed once when migrated


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


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (11, 26) if code is not None else True  # SQLITE_CORRUPT, SQLITE_NOTADB


def _state_error(path: Path, exc: sqlite3.Error) -> StateError | BusyError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return BusyError(f"another agentcom run is using {path}")
    return StateError(f"cannot use the message store {path}: {text}")


class MessageStore:
    """The store of one (hub, agent) folder. `MessageStore.memory()` is its in-memory twin."""

    def __init__(
        self, path: str | os.PathLike[str], busy_timeout: float = 10.0, on_wait: Callable[[str], None] | None = None
    ):
        self.path = Path(path) if str(path) != ":memory:" else Path(":memory:")
        self.busy_timeout = busy_timeout
        self.on_wait = on_wait
        self.warnings: list[str] = []  # what a command should say; `take_warnings` hands each over once
        self._in_memory = str(path) == ":memory:"
        self._writing = False
        # (table, rowid) -> (row, problem, fixes): damaged rows found by reads, dealt with at the next write
        self._damaged: dict[tuple[str, int], tuple[Any, str, dict[str, Any] | None]] = {}
        self._damage_told: set[tuple[str, int]] = set()
        self._db = self._connect()

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

    # connection -----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            if not self._in_memory:
                create_private(self.path)
            db = sqlite3.connect(
                str(self.path), timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
        except OSError as exc:
            raise StateError(f"cannot open the message store {self.path}: {exc.strerror or exc}") from None
        except sqlite3.Error as exc:
            raise _state_error(self.path, exc) from None
        db.row_factory = sqlite3.Row
        try:
            self._prepare(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            if not _is_corrupt(exc):
                raise _state_error(self.path, exc) from None
            self._move_aside(str(exc))
            db = sqlite3.connect(
                str(self.path), timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            db.row_factory = sqlite3.Row
            try:
                self._prepare(db)
                with self._transaction(db):
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('recovered', 1)")
            except sqlite3.Error as err:
                raise _state_error(self.path, err) from None
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == len(MIGRATIONS):
            check_schema(db)
            self._vacuum_once(db)  # (one read of meta, unless a VACUUM is still owed)
            return  # the common case: cheap reads, no write
        if not self._in_memory:
            if version == 0:  # before the first table: pruning then gives space back (incremental vacuum)
                db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            self._use_wal(db)
        with self._transaction(db):
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another run may have migrated
            if version > len(MIGRATIONS):
                raise StateError(f"the message store {self.path} was written by a newer agentcom (schema {version})")
            if version == 0:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at REAL)"
                )
            for number in range(version + 1, len(MIGRATIONS) + 1):
                migrate(db, number)
        self._vacuum_once(db)

    def _vacuum_once(self, db: sqlite3.Connection) -> None:
        """A store made before migration 6 turns incremental vacuum on with one VACUUM, done on
        open when the file is small enough to take a moment; a larger one stays as it is
        (pruning still frees its pages for reuse; `docs/benchmarks.md` says how to reclaim them)."""
        pending = db.execute("SELECT value FROM meta WHERE key = 'vacuum_pending'").fetchone()
        if pending is None or self._in_memory:
            return
        pages, size = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
        if pages * size > VACUUM_AT_OPEN_BYTES:
            return
        try:
            db.execute("VACUUM")
            with self._transaction(db):
                db.execute("DELETE FROM meta WHERE key = 'vacuum_pending'")
        except sqlite3.OperationalError:
            pass  # another run holds the store: the next open tries again

    def _use_wal(self, db: sqlite3.Connection) -> None:
        """Switch a new store to WAL. The switch needs the file to itself and SQLite does not wait
        for it, so runs creating the store at the same moment take turns here."""
        give_up_at = time.monotonic() + self.busy_timeout
        while db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > give_up_at:
                    raise
                time.sleep(0.02)

    def _move_aside(self, reason: str) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        try:
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
            create_private(self.path)
        except OSError as err:
            raise StateError(
                f"message store {self.path} is corrupt and cannot be moved aside: {err.strerror}"
            ) from None
        self.warnings.append(
            f"message store {self.path} was corrupt ({reason[:100]}); moved it to {aside} and recovered from the hub"
        )

    def take_warnings(self) -> list[str]:
        """The warnings gathered since the last call (the caller reports them; each comes once)."""
        taken, self.warnings = self.warnings, []
        return taken

    def close(self) -> None:
        if self._damaged:  # found by a read-only command: repair or set aside now, if the store lets us
            with contextlib.suppress(StateError, BusyError), self.write():
                pass
        self._db.close()

    def __enter__(self) -> MessageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self, db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextlib.contextmanager
    def write(self) -> Iterator[MessageStore]:
        """One write transaction: all of it commits, or (on any exception, kill -9) none of it."""
        try:
            self._begin()
        except sqlite3.Error as exc:
            raise _state_error(self.path, exc) from None
        self._writing = True
        try:
            self._fix_damaged()
            yield self
            self._fix_damaged()
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        finally:
            self._writing = False
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise _state_error(self.path, exc) from None

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[MessageStore]:
        """A read transaction: every read inside sees one consistent state; writes nothing."""
        try:
            self._db.execute("BEGIN")
        except sqlite3.Error as exc:
            raise _state_error(self.path, exc) from None
        try:
            yield self
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("COMMIT")

    def _begin(self) -> None:
        """BEGIN IMMEDIATE; past one second of waiting, say what we wait for."""
        first = min(1.0, self.busy_timeout)
        self._db.execute(f"PRAGMA busy_timeout = {int(first * 1000)}")
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or self.busy_timeout <= first:
                raise
            if self.on_wait:
                self.on_wait(
                    f"waiting up to {self.busy_timeout - first:g} s more for another agentcom run using {self.path}"
                )
            self._db.execute(f"PRAGMA busy_timeout = {int((self.busy_timeout - first) * 1000)}")
            self._db.execute("BEGIN IMMEDIATE")
        finally:  # every other statement waits as long as the settings say
            self._db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "decode" not in str(exc):
                raise _state_error(self.path, exc) from None
        except sqlite3.Error as exc:
            raise _state_error(self.path, exc) from None
        # A cell of invalid UTF-8 (a damaged file): read again with its bad bytes kept as lone
        # surrogates, which `inspect_row` recognises.
        self._db.text_factory = lambda data: data.decode("utf-8", "surrogateescape")
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _state_error(self.path, exc) from None
        finally:
            self._db.text_factory = str

    def _message_rows(self, sql: str, params: Sequence[Any] = (), now: float | None = None) -> list[Any]:
        """Rows of the messages table (`SELECT rowid, * ...`) that can be used: a damaged one is
        returned repaired (a dict), or left out when it must be set aside (done at the next write)."""
        out: list[Any] = []
        for row in self._read(sql, params):
            checked = inspect_row(row, time.time() if now is None else now, _derived_columns)
            if checked.problem is None:
                out.append(row)
                continue
            self._note_damage("messages", row, checked.problem, checked.fixes)
            if checked.fixes is not None:
                out.append({**row_dict(row), **checked.fixes})
        if self._damaged and self._writing:
            self._fix_damaged()
        return out

    def _note_damage(self, table: str, row: Any, problem: str, fixes: dict[str, Any] | None) -> None:
        """A damaged row found by a read: said at once (a read-only command reports it too), dealt
        with at the next write or at close."""
        key = (table, row["rowid"])
        self._damaged[key] = (row, problem, fixes)
        if key in self._damage_told:
            return
        self._damage_told.add(key)
        label = _message_label(row["id"]) if table == "messages" else "a sent message"
        if fixes is not None:
            self.warnings.append(f"repaired a damaged row of the message store ({label}: {problem})")
        else:
            self.warnings.append(
                f"set aside a damaged row of the message store ({label}: {problem}); kept for a person"
                " in the store's set_aside table"
                + (", and taken again from the hub if it still holds it" if table == "messages" else "")
            )

    def _fix_damaged(self) -> None:
        """Inside a write: repair the damaged rows found by reads, or set them aside (kept for a
        person in `set_aside`; a message the hub still holds comes back with the next poll)."""
        for (table, rowid), (row, problem, fixes) in self._damaged.items():
            if fixes is not None:
                assignments = ", ".join(f"{column} = ?" for column in fixes)
                self._exec(f"UPDATE messages SET {assignments} WHERE rowid = ?", (*fixes.values(), rowid))
                continue
            key = row["id"] if isinstance(row["id"], str) and row["id"] else f"{table}-rowid-{rowid}"
            seq = row["seq"] if table == "messages" and isinstance(row["seq"], int) else None
            self._exec(
                "INSERT INTO set_aside (key, kind, seq, sender, reason, raw, at) VALUES (?, 'damaged', ?, NULL, ?, ?, "
                "?)",
                (clean(key), seq, f"{table}: {problem}", raw_row(row), time.time()),
            )
            self._exec(f"DELETE FROM {table} WHERE rowid = ?", (rowid,))
        self._damaged.clear()

    def _sent_rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of the sent table (`SELECT rowid, * ...`) whose id and payload can be read."""
        out = []
        for row in self._read(sql, params):
            try:
                ok = isinstance(row["id"], str) and isinstance(json.loads(row["payload"]), dict)
            except (TypeError, ValueError, RecursionError):
                ok = False
            if ok:
                out.append(row)
            else:
                self._note_damage("sent", row, "its payload cannot be read", None)
        if self._damaged and self._writing:
            self._fix_damaged()
        return out

    # The public query surface, for the store's companions (`a2a_tasks.py`): reads that repair
    # damaged text, statements whose errors become StateError/BusyError, and SQLite's
    # host-parameter limit. Writes belong inside `write()` (BEGIN IMMEDIATE, busy handling).

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """The rows of one read (a cell of invalid UTF-8 is read with its bad bytes kept)."""
        return self._read(sql, params)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """One statement; inside `write()` when it writes."""
        return self._exec(sql, params)

    def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """One statement per row of parameters; inside `write()`."""
        self._many(sql, rows)

    @staticmethod
    def id_chunks(ids: Iterable[str]) -> Iterator[tuple[str, list[str]]]:
        """The distinct `ids` in chunks for one `IN ({marks})` each (`in_chunks`)."""
        return in_chunks(ids)

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise _state_error(self.path, exc) from None

    def _many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise _state_error(self.path, exc) from None

    def quick_check(self) -> str:
        """SQLite's own consistency check of the file: 'ok', or what is wrong."""
        return str(self._read("PRAGMA quick_check")[0][0])

    # meta -----------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def get_number(self, key: str, default: float = 0) -> float:
        """A numeric meta value; the default when it is missing or damaged."""
        value = self.get_meta(key, default)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else default

    def set_meta(self, key: str, value: Any) -> None:
        self._exec("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # what a check reads -----------------------------------------------------

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

    def in_lease(self, now: float) -> tuple[int, float | None]:
        """Messages returned and still in their lease, and when the first lease ends (a lease
        taken while the clock ran ahead is over, not in lease)."""
        row = self._read(
            f"SELECT COUNT(*), MIN(due) FROM messages WHERE state IN {OPEN_SQL} AND state IN ('leased', 'shown')"
            f" AND due > ?1 AND NOT {OVER_SQL}",
            (now,),
        )[0]
        return int(row[0]), row[1]

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

    # channels and the room ----------------------------------------------------

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

    # what a check writes ----------------------------------------------------

    def apply_check(self, plan: CheckPlan, now: float, via: str = "poll") -> None:
        """Apply a plan inside `write()`: new messages, intents, leases, dead letters, roster, cursor."""
        columns = [
            *_BODY_COLUMNS,
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
            rows.append((*_body_columns(msg), via, now, decision.disposition, decision.rule, decision.reason, *state))
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
        names = _BODY_COLUMNS[1:]  # all but the id, which comes last, for the WHERE
        self._many(
            f"UPDATE messages SET {', '.join(f'{c} = ?' for c in names)} WHERE id = ? AND body IS NULL",
            [(*cols[1:], cols[0]) for cols in map(_body_columns, messages)],
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

    # finishing messages -------------------------------------------------------

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

    # the one-time import of 0.1's state (legacy.py) -----------------------------

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

    # history ------------------------------------------------------------------

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

    def _rows_in(
        self,
        reader: Callable[[str, Sequence[Any]], list[Any]],
        sql: str,
        condition: str,
        ids: Iterable[str],
        before: Sequence[Any] = (),
        after: Sequence[Any] = (),
    ) -> list[list[Any]]:
        """The rows of `sql` for each chunk of `ids` (`in_chunks`), a list a chunk: its `{ids}`
        becomes `condition` with the chunk's placeholders (for `{marks}`), the chunk's ids
        between the parameters `before` and `after`."""
        return [
            reader(sql.replace("{ids}", condition.replace("{marks}", marks)), [*before, *chunk, *after])
            for marks, chunk in in_chunks(ids)
        ]

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


def _number(value: Any) -> float:
    """A time column as a sort key (a damaged cell sorts first, as SQLite puts NULL)."""
    return float(value) if isinstance(value, (int, float)) else float("-inf")


def in_chunks(ids: Iterable[T]) -> Iterator[tuple[str, list[T]]]:
    """The distinct `ids`, in chunks of at most `ID_CHUNK`, each with its placeholders: one
    `IN ({marks})` a chunk keeps a statement within SQLite's host-parameter limit (999 before
    SQLite 3.32, and a build may set it lower)."""
    distinct = list(dict.fromkeys(ids))
    for start in range(0, len(distinct), ID_CHUNK):
        chunk = distinct[start : start + ID_CHUNK]
        yield ",".join("?" * len(chunk)), chunk


def clean(text: str | None) -> str | None:
    """A copy of untrusted text SQLite can hold (lone surrogates become U+FFFD); the exact
    original stays in the message's JSON body."""
    if text is None or text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


_BODY_COLUMNS = (
    "id",
    "seq",
    "sender",
    "recipient",
    "type",
    "body",
    "reply_to",
    "timestamp",
    "text",
    "priority",
    "broadcast",
)


def _body_columns(msg: Message) -> tuple[Any, ...]:
    """What a message's body puts in its row, in `_BODY_COLUMNS` order: the exact JSON, and
    cleaned copies for queries."""
    return (
        msg.id,
        msg.seq,
        clean(msg.sender),
        clean(msg.to),
        clean(msg.type),
        json.dumps(msg.to_json()),
        clean(msg.reply_to),
        msg.timestamp,
        clean(summary_text(msg)),
        msg.priority,
        int(msg.broadcast),
    )


def _derived_columns(msg: Message) -> dict[str, Any]:
    return dict(zip(_BODY_COLUMNS, _body_columns(msg), strict=True))


def _message_label(msg_id: Any) -> str:
    """A stored id in a warning only when it looks like one (warnings reach an LLM unfenced)."""
    if isinstance(msg_id, str) and len(msg_id) == 16 and all(c in "0123456789abcdef" for c in msg_id):
        return f"message {msg_id}"
    return "a message"
