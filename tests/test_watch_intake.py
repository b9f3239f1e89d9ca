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
