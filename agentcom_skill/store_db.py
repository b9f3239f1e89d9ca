"""The message store's file: one SQLite database per (hub, agent), mode 0600, WAL.

`StoreDatabase` opens it (creating and migrating it: `migrations.py`; a corrupt file is moved
aside and a new one made), and keeps the transaction rules in one place: every change is one
short `write()` (`BEGIN IMMEDIATE`, with a busy timeout set at connect, and a word on stderr
after a second of waiting), nothing holds a transaction across the network, reads inside
`snapshot()` see one state. Its reads of the messages and sent tables repair or set aside a
damaged row (`stored.inspect_row`) instead of failing. The public query surface (`query`,
`execute`, `execute_many`, `id_chunks`) serves the store's companions (`a2a_tasks.py`).

What the store holds and does is built on it: `store_history.py` (reads of what was
received and sent), then `store.py` (`MessageStore`: the mailbox).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

from .delivery import CLOCK_SLACK, LONGEST_SPAN, OPEN_STATES, summary_text
from .errors import BusyError, StateError
from .files import create_private
from .message import Message
from .migrations import MIGRATIONS, check_schema, migrate
from .stored import inspect_row, raw_row, row_dict

T = TypeVar("T")
OPEN_SQL = "(" + ", ".join(f"'{state}'" for state in OPEN_STATES) + ")"  # SQL lists of delivery.py's states
# A lease or defer over at ?1 (a time): its end has come, or it ends further off than its
# length allows (taken while the clock ran ahead): `delivery.bounded_due` in SQL.
OVER_SQL = f"(due <= ?1 OR due > ?1 + COALESCE(span, {LONGEST_SPAN!r}) + {CLOCK_SLACK!r})"
ID_CHUNK = 500  # ids per `IN (?, ...)`: well under SQLite's host-parameter limit (999 before 3.32)
VACUUM_AT_OPEN_BYTES = 64 * 1024 * 1024  # an older store this small is vacuumed once when migrated


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


BODY_COLUMNS = (
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


def body_columns(msg: Message) -> tuple[Any, ...]:
    """What a message's body puts in its row, in `BODY_COLUMNS` order: the exact JSON, and
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
    return dict(zip(BODY_COLUMNS, body_columns(msg), strict=True))


def _message_label(msg_id: Any) -> str:
    """A stored id in a warning only when it looks like one (warnings reach an LLM unfenced)."""
    if isinstance(msg_id, str) and len(msg_id) == 16 and all(c in "0123456789abcdef" for c in msg_id):
        return f"message {msg_id}"
    return "a message"


class StoreDatabase:
    """The SQLite file of one (hub, agent) folder: connection, migrations, transactions,
    damaged rows, meta. `MessageStore` (store.py) is the store built on it."""

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

    # connection --------------------------------------------------------------

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
        stem = f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        aside, n = self.path.with_name(stem), 1
        while aside.exists():  # twice within a second in one process (a watch, an MCP server): never over the first
            n += 1
            aside = self.path.with_name(f"{stem}-{n}")
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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # transactions: every change one short BEGIN IMMEDIATE --------------------

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
    def write(self) -> Iterator[Self]:
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
    def snapshot(self) -> Iterator[Self]:
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

    # reads (a damaged row is repaired or set aside, never a failure) ---------

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

    # meta --------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def get_number(self, key: str, default: float = 0) -> float:
        """A numeric meta value; the default when it is missing or damaged."""
        value = self.get_meta(key, default)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else default

    def set_meta(self, key: str, value: Any) -> None:
        self._exec("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

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
