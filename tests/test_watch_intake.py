"""What the watch does with the frames it reads, without a socket: every pushed message is
kept (in one transaction per batch), an unreadable one is set aside and reported, and a store
that fails keeps the frames in memory until it can take them (issues 19.1, 19.2, 19.7)."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

from agentcom_skill.config import load_settings
from agentcom_skill.errors import StateError
from agentcom_skill.message import parse_mailbox
from agentcom_skill.store import MessageStore
from agentcom_skill.watch import Events, Watch


class Recorder(Events):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict] = []

    def __call__(self, kind: str, text: str, **fields) -> None:
        self.seen.append({"event": kind, "text": text, **fields})


def watch(tmp_path: Path) -> tuple[Watch, Recorder]:
    s = load_settings(
        {
            "hub_url": "http://127.0.0.1:9",
            "agent_id": "alice",
            "token": "t" * 64,
            "state_dir": str(tmp_path),
            "config": str(tmp_path / "none.toml"),
        },
        env={},
    )
    events = Recorder()
    w = Watch(s, events)
    w.store, w.hub = MessageStore.open(s.agent_state_dir()), None
    w.history_usable = False  # no hub here to tell broadcasts apart (test_watch.py asks a real one)
    return w, events


def frame(n: int, payload: str | None = None, **extra) -> str:
    text = json.dumps(
        {
            "type": "message",
            "id": f"{n:016x}",
            "from": "bob",
            "message_type": "chat",
            "payload": {"text": f"m{n}"},
            "reply_to": None,
            "timestamp": 1,
            **extra,
        }
    )
    return text.replace(json.dumps({"text": f"m{n}"}), payload) if payload else text


def stored(w: Watch) -> dict[str, dict]:
    return {r["id"]: dict(r) for r in w.store.messages(limit=1000)}


def test_a_batch_of_frames_is_kept_with_the_unreadable_set_aside_and_duplicates_once(tmp_path):
    w, events = watch(tmp_path)
    deep = "[" * 50_000 + "]" * 50_000
    w._on_frames([frame(1), frame(2, deep), frame(3, '{"t": NaN}'), frame(1), frame(4), '{"type": "pong"}', "not json"])
    rows = stored(w)
    assert set(rows) == {f"{n:016x}" for n in (1, 2, 3, 4)}
    assert rows[f"{2:016x}"]["state"] == rows[f"{3:016x}"]["state"] == "dead"
    assert rows[f"{1:016x}"]["state"] == rows[f"{4:016x}"]["state"] == "pending"
    assert [e["id"] for e in events.seen if e["event"] == "message"] == [f"{n:016x}" for n in (1, 4)]
    assert len([e for e in events.seen if e["event"] == "warning" and "set aside" in e["text"]]) == 2
    assert w.status["messages_received"] == 5 and not w.unstored


def test_frames_a_failing_store_cannot_take_are_kept_in_memory_and_stored_later(tmp_path):
    w, events = watch(tmp_path)
    real_write = w.store.write

    def broken():
        raise StateError("disk full")

    w.store.write = broken  # type: ignore[method-assign]
    w._on_frames([frame(1), frame(2)])
    assert len(w.unstored) == 2 and any(e["event"] == "store_failed" for e in events.seen)
    w.store.write = real_write  # type: ignore[method-assign]
    w.retry_store_at = 0.0
    w._on_frames([frame(3)])
    assert not w.unstored and set(stored(w)) == {f"{n:016x}" for n in (1, 2, 3)}


class SweptHub:
    """A mailbox holding one new message; reading it, the wake thread leases what was waiting
    (as a wake does, on its own connection), so fewer need attention after than before."""

    def __init__(self, w: Watch):
        self.w = w

    def poll(self, agent_id: str, since: int = 0):
        with sqlite3.connect(self.w.store.path) as other:
            other.execute("UPDATE messages SET state = 'leased', due = 1e12 WHERE state = 'pending'")
        return parse_mailbox({"messages": [{**json.loads(frame(9)), "to": "alice", "seq": 1}], "last_seq": 1}, 0)

    def ack(self, agent_id: str, seq: int) -> int:
        return seq


def test_a_sweep_counts_the_new_messages_not_a_difference_the_wake_thread_can_make_negative(tmp_path):
    w, events = watch(tmp_path)
    w._on_frames([frame(1), frame(2), frame(3)])
    w.hub = SweptHub(w)
    assert w._drain(sweep=True)
    (swept,) = [e["text"] for e in events.seen if e["event"] == "swept"]
    assert swept.startswith("mailbox swept: 1 new need attention"), swept


def test_each_log_line_starts_with_the_time_in_utc():
    err, out = io.StringIO(), io.StringIO()
    events = Events(jsonl=True, out=out, err=err, clock=lambda: 1796624415.25)
    events("connected", "connected to ws://hub/ws as alice")
    assert err.getvalue() == "2026-12-07T06:20:15.250Z agentcom watch: connected to ws://hub/ws as alice\n"
    assert json.loads(out.getvalue())["at"] == 1796624415.25


class FullDisk:
    """The store's SQLite connection on a full disk: every write statement fails as SQLite says."""

    def __init__(self, db: sqlite3.Connection):
        self.db, self.full = db, True

    def __getattr__(self, name: str):
        return getattr(self.db, name)

    def _check(self, sql: str) -> None:
        if self.full and sql.lstrip().upper().startswith(("INSERT", "UPDATE")):
            raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql: str, *args):
        self._check(sql)
        return self.db.execute(sql, *args)

    def executemany(self, sql: str, *args):
        self._check(sql)
        return self.db.executemany(sql, *args)


class Socket:
    """A connected socket that has `frames` to read, then nothing more."""

    def __init__(self, frames: list[str]):
        self.frames, self.sent = list(frames), []

    def recv(self, timeout: float | None = None) -> str:
        if not self.frames:
            raise TimeoutError
        return self.frames.pop(0)

    def send(self, data: str) -> None:
        self.sent.append(data)


def test_the_first_store_that_fails_ends_the_connection(tmp_path):
    """Issue 27, item 1: a pushed message the store cannot take (disk full) ends the socket at
    once, so the hub keeps what follows in the mailbox; what was read is held."""
    w, events = watch(tmp_path)
    w.store._db = FullDisk(w.store._db)  # type: ignore[assignment]
    ws = Socket([frame(1), frame(2)])
    w._converse(ws)  # returns: without it, this would read (and hold) for as long as the hub pushes
    assert [m.id for m in w.unstored] == [f"{1:016x}", f"{2:016x}"]
    failed = [e for e in events.seen if e["event"] == "store_failed"]
    assert len(failed) == 1 and "database or disk is full" in failed[0]["text"]
    assert events.seen[-1]["event"] == "disconnected" and "closing the connection" in events.seen[-1]["text"]


def run_loop(w: Watch, sessions: list[int], steps: int, heal_at: int | None, monkeypatch) -> int:
    """`Watch._loop` with a fake clock and sleep; each session reads one frame; the disk is
    full until `heal_at` sleeps have passed; the watch is stopped after `steps` sleeps."""
    now = [1000.0]
    w.clock = lambda: now[0]
    slept = [0]

    def session() -> bool:
        sessions.append(len(sessions))
        w._on_frames([frame(10 + len(sessions))])
        sleep(1.0)  # a session takes time
        return True

    def sleep(seconds: float) -> None:
        now[0] += max(seconds, 0.2)
        slept[0] += 1
        if slept[0] == heal_at:
            w.store._db.full = False
        if slept[0] >= steps:
            w.stopping = True

    monkeypatch.setattr(w, "_session", session)
    monkeypatch.setattr("agentcom_skill.watch.time.sleep", sleep)
    monkeypatch.setattr("agentcom_skill.watch.random.uniform", lambda a, b: 0.0)
    return w._loop()


def test_a_stop_that_must_drop_unstored_messages_writes_each_in_full_and_exits_6(tmp_path, monkeypatch):
    """Issue 27, item 1: while the store fails, the held messages are retried (backing off) and
    no connection is opened (memory stays bounded; the hub keeps the rest). SIGTERM then:
    each held message in full on stderr, one JSON line, and exit 6 (local state unusable)."""
    w, events = watch(tmp_path)
    w.events.err = err = io.StringIO()
    w.store._db = FullDisk(w.store._db)  # type: ignore[assignment]
    sessions: list[int] = []
    assert run_loop(w, sessions, steps=300, heal_at=None, monkeypatch=monkeypatch) == 6
    assert sessions == [0], "never connected again while holding what the store could not take"
    retries = [e for e in events.seen if e["event"] == "store_failed"]
    assert 3 <= len(retries) <= 10, "retried, backing off (not every 0.2 s)"
    lines = [json.loads(x) for x in err.getvalue().splitlines() if x.startswith("{")]
    assert [x["message"]["id"] for x in lines] == [f"{11:016x}"]
    assert lines[0] == {"event": "unstored_message", "message": pushed(11)}
    assert events.seen[-1]["event"] == "stopped" and "1 PUSHED MESSAGE(S) NOT STORED" in events.seen[-1]["text"]


def test_held_messages_are_stored_once_the_disk_has_room_and_then_the_watch_reconnects(tmp_path, monkeypatch):
    w, events = watch(tmp_path)
    w.events.err = err = io.StringIO()
    w.store._db = FullDisk(w.store._db)  # type: ignore[assignment]
    sessions: list[int] = []
    assert run_loop(w, sessions, steps=100, heal_at=20, monkeypatch=monkeypatch) == 0
    assert len(sessions) > 1 and not w.unstored
    assert {f"{10 + n:016x}" for n in range(1, len(sessions) + 1)} <= set(stored(w))
    assert "{" not in err.getvalue() and events.seen[-1]["event"] == "stopped"


def pushed(n: int) -> dict:
    """What frame(n) is as a message (a pushed one has no seq; a direct one is to us)."""
    data = json.loads(frame(n))
    return {
        "id": data["id"],
        "from": data["from"],
        "to": "alice",
        "type": data["message_type"],
        "payload": data["payload"],
        "reply_to": None,
        "timestamp": 1,
        "seq": None,
    }
