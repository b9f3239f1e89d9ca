"""The store at any size (issue 30): a check reads what it may deliver, not every open message;
counts come from counters the triggers keep; pruning goes in bounded steps and gives space back.

Pure store logic on in-memory or temporary SQLite files: no hub, no process."""

from __future__ import annotations

import json
import sqlite3

from hypothesis import given
from hypothesis import settings as settings_h
from hypothesis import strategies as st

from agentcom_skill.actions.check import prune_store, run_check
from agentcom_skill.config import load_settings
from agentcom_skill.delivery import OPEN_STATES, OpenMessage, StoreView, plan_check
from agentcom_skill.message import MailboxBatch, parse_mailbox
from agentcom_skill.migrations import MIGRATIONS, statements
from agentcom_skill.store import PRUNE_STEP, MessageStore, row_message
from agentcom_skill.stored import open_record

NOW = 1_000_000.0


def settings(**over):
    base = {
        "hub_url": "http://hub:4000",
        "agent_id": "gcu",
        "token": "a1" * 32,
        "state_dir": "/nonexistent",
        "config": "/nonexistent/none.toml",
    }
    return load_settings({**base, **over}, env={})


def chats(first: int, count: int, priorities=None, broadcasts=None) -> MailboxBatch:
    raw = []
    for n in range(first, first + count):
        payload: dict = {"text": f"item {n}"}
        if priorities:
            payload["priority"] = priorities[(n - first) % len(priorities)]
        raw.append(
            {
                "id": f"{n:016x}",
                "from": f"peer{n % 3}",
                "to": None if broadcasts and broadcasts[(n - first) % len(broadcasts)] else "gcu",
                "type": "chat",
                "payload": payload,
                "reply_to": None,
                "timestamp": 1,
                "seq": n,
            }
        )
    return parse_mailbox({"messages": raw}, 0)


def store_with(batch: MailboxBatch, now: float = NOW) -> MessageStore:
    store = MessageStore.memory()
    with store.write():
        store.apply_check(
            plan_check(batch, store.view([m.id for m in batch.messages], now, 0), settings(), now, 0), now
        )
    return store


def full_view(store: MessageStore, now: float) -> StoreView:
    """The view as it was before issue 30: every open attention message, with its body."""
    rows = store._message_rows(
        "SELECT rowid, * FROM messages WHERE state IN ('pending', 'leased', 'shown', 'deferred')"
    )
    return StoreView(
        open=tuple(OpenMessage(r["id"], r["seq"], row_message(r), open_record(r, now)) for r in rows),
        cursor=int(store.get_number("cursor")),
    )


def counted_by_scan(store: MessageStore) -> dict:
    rows = store._read("SELECT disposition, state, COUNT(*) FROM messages GROUP BY disposition, state")
    return {(r[0], r[1]): r[2] for r in rows}


def counted_by_triggers(store: MessageStore) -> dict:
    return {(r[0], r[1]): r[2] for r in store._read("SELECT disposition, state, n FROM message_counts") if r[2]}


PRIORITY = st.sampled_from(["low", "normal", "high", "urgent"])
# what happens to one stored message before the check: (state, due relative to now)
FATE = st.sampled_from(
    [
        ("pending", None),
        ("leased", -5),
        ("leased", 50),
        ("shown", -1),
        ("shown", 300),
        ("deferred", -2),
        ("deferred", 900),
        ("done", None),
        ("dead", None),
    ]
)


@settings_h(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(PRIORITY, st.booleans(), FATE, st.integers(0, 6)), min_size=1, max_size=40),
    st.one_of(st.none(), st.integers(0, 12)),
)
def test_a_check_on_the_partial_view_decides_as_on_every_open_message(fates, limit):
    """The same messages, in the same order, the same counts and dead letters, whether the
    plan sees every open message or only what the store now loads (due ones, the first
    `limit` pending in attention order, counts of the rest)."""
    n = len(fates)
    b = chats(1, n, [f[0] for f in fates], [f[1] for f in fates])
    store = store_with(b)
    for m, (_, _, (state, due), expired) in zip(b.messages, fates, strict=True):
        finished = NOW - 10 if state in ("done", "dead") else None
        store._exec(
            "UPDATE messages SET state = ?, due = ?, expired = ?, deliveries = ?, finished_at = ? WHERE id = ?",
            (state, None if due is None else NOW + due, expired % 5, expired, finished, m.id),
        )
    s = settings(max_deliveries=4)
    new = chats(1000, 2, ["urgent", "low"])
    ids = [m.id for m in new.messages]
    with store.snapshot():
        partial = plan_check(new, store.view(ids, NOW, limit), s, NOW, limit)
        full = plan_check(new, full_view(store, NOW), s, NOW, limit)
    assert [m["id"] for m in partial.messages] == [m["id"] for m in full.messages]
    assert [m["deliveries"] for m in partial.messages] == [m["deliveries"] for m in full.messages]
    assert (partial.pending, partial.in_lease, partial.next_due) == (full.pending, full.in_lease, full.next_due)
    assert sorted(partial.dead) == sorted(full.dead)
    assert partial.leases == full.leases


def test_a_pushed_batch_reads_no_pending_body():
    """The watch's intake (limit 0) parses none of the open messages' bodies: what it costs
    does not grow with them."""
    store = store_with(chats(1, 300))
    parsed: list[str] = []
    original = store._message_rows

    def counting(sql, params=(), now=None):
        rows = original(sql, params, now)
        parsed.extend(r["id"] for r in rows)
        return rows

    store._message_rows = counting  # type: ignore[method-assign]
    view = store.view([], NOW, 0)
    assert parsed == [] and view.open == () and view.unloaded == 300
    store.view([], NOW, 5)
    assert len(parsed) == 5, "a check of 5 reads 5"


@settings_h(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["finish", "defer", "lease", "delete", "damage", "prune", "insert"]), max_size=25))
def test_the_counters_match_a_scan_whatever_happens(steps):
    store = store_with(chats(1, 12))
    ids = [f"{n:016x}" for n in range(1, 13)]
    later = 100
    for n, step in enumerate(steps):
        target = ids[n % len(ids)]
        if step == "finish":
            with store.write():
                store.finish([target], "done", NOW)
        elif step == "defer":
            with store.write():
                store.defer([target], NOW + 60, NOW)
        elif step == "lease":
            store._exec("UPDATE messages SET state = 'leased', due = ? WHERE id = ?", (NOW + 5, target))
        elif step == "delete":
            store._exec("DELETE FROM messages WHERE id = ?", (target,))
        elif step == "damage":
            store._exec("UPDATE messages SET state = 'bogus' WHERE id = ?", (target,))
            store.messages(limit=100)  # read: repaired at the next write
            with store.write():
                pass
        elif step == "prune":
            prune_store(store, settings(retention_max=3), [], NOW + 10 * 86400 * (n + 1), 60.0)
        else:
            later += 1
            with store.write():
                b = chats(later, 1)
                store.apply_check(plan_check(b, store.view([later], NOW, 0), settings(), NOW, 0), NOW)
        assert counted_by_triggers(store) == counted_by_scan(store), step
    counts = store.counts(NOW)
    scan = counted_by_scan(store)
    assert counts["stored"] == sum(scan.values())
    assert counts["open"] == sum(v for (d, s), v in scan.items() if d == "attention" and s in OPEN_STATES)


def test_pruning_goes_in_bounded_steps_keeps_what_it_must_and_ages_out_what_was_never_handled(tmp_path):
    s = settings(retention_days=30, retention_max=10_000, open_max_days=10)
    store = store_with(chats(1, 3 * PRUNE_STEP))
    ids = [f"{n:016x}" for n in range(1, 3 * PRUNE_STEP + 1)]
    with store.write():
        store.finish(ids[: 2 * PRUNE_STEP + 50], "done", NOW)
    sizes = []
    with store.write():
        sizes.append(store.prune_step(ids[:5], NOW + 3600, 30, 100, 10))
    assert sizes[0] == (PRUNE_STEP, 0), "one step: PRUNE_STEP rows at most"
    while sizes[-1] != (0, 0):
        with store.write():
            sizes.append(store.prune_step(ids[:5], NOW + 3600, 30, 100, 10))
    left = {r[0] for r in store._read("SELECT id FROM messages")}
    assert set(ids[:5]) <= left, "still at the hub: kept"
    assert set(ids[2 * PRUNE_STEP + 50 :]) <= left, "unfinished: kept"
    prune_store(store, s, ids[:5], NOW + 3600, 60.0)
    assert not store.prune_due(NOW + 3600 + 60), "the pass ended: the next one in an hour"
    # eleven days on, the messages nobody ever handled are dead letters, listed, not dropped
    changed, aged = prune_store(store, s, [], NOW + 11 * 86400, 60.0)
    assert aged == PRUNE_STEP - 50
    dead = store.messages(state="dead", limit=1000)
    assert len(dead) == aged and all("open_max_days" in r["reason"] for r in dead)

    said = run_check(None, store, s, limit=5, now=NOW + 11 * 86400)["warnings"]
    assert [w for w in said if w.startswith(f"dead-lettered {aged} message(s) left pending")], said
    assert not run_check(None, store, s, limit=5, now=NOW + 11 * 86400 + 1)["warnings"], "said once"


def test_pruning_gives_the_space_back(tmp_path):
    store = MessageStore.open(tmp_path / "agent")
    assert store._read("PRAGMA auto_vacuum")[0][0] == 2, "incremental, from the first table"
    big = chats(1, 2000)
    big = big._replace(messages=tuple(m._replace(payload={"text": "x" * 2000}) for m in big.messages))
    with store.write():
        store.apply_check(plan_check(big, store.view([], NOW, 0), settings(), NOW, 0), NOW)
        store.finish([m.id for m in big.messages], "done", NOW)
    store._exec("PRAGMA wal_checkpoint(TRUNCATE)")
    before = store._read("PRAGMA page_count")[0][0]
    s = settings(retention_days=1, retention_max=10)
    while prune_store(store, s, [], NOW + 2 * 86400, 60.0)[0]:
        pass
    store._exec("PRAGMA wal_checkpoint(TRUNCATE)")
    after = store._read("PRAGMA page_count")[0][0]
    assert after < before / 4, (before, after)
    store.close()


def test_an_older_store_is_migrated_with_its_counts_and_vacuumed_when_small(tmp_path):
    folder = tmp_path / "agent"
    folder.mkdir()
    db = sqlite3.connect(folder / "messages.sqlite3")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at REAL)")

    for number, (_, sql) in enumerate(MIGRATIONS[:5], start=1):
        if sql in ("FTS5", "LAZY_FTS"):
            continue
        for statement in statements(sql):
            db.execute(statement)
        db.execute("INSERT INTO migrations VALUES (?, 'x', 0)", (number,))
    body = {"id": "a" * 16, "from": "loash", "to": "gcu", "type": "chat", "payload": {"text": "hi"}}
    for n, state in enumerate(["pending", "done", "dead", "pending"]):
        db.execute(
            "INSERT INTO messages (id, seq, sender, type, body, via, received_at, disposition, state)"
            " VALUES (?, ?, 'loash', 'chat', ?, 'poll', 1.0, 'attention', ?)",
            (f"{n:016x}", n, json.dumps({**body, "id": f"{n:016x}", "seq": n}), state),
        )
    db.execute("PRAGMA user_version = 5")
    db.commit()
    db.close()
    store = MessageStore.open(folder)
    assert store.counts(NOW)["open"] == 2 and store.counts(NOW)["dead"] == 1 and store.counts(NOW)["stored"] == 4
    assert store._read("PRAGMA auto_vacuum")[0][0] == 2 and store.get_meta("vacuum_pending") is None
    assert [m["id"] for m in plan_check(MailboxBatch([], 0), store.view([], NOW, 1), settings(), NOW, 1).messages] == [
        f"{0:016x}"
    ]
    store.close()


def test_a_stopping_watch_stops_reading_a_stream_that_never_pauses():
    """SIGTERM during a stream: the frames read are taken in, then the watch closes (it read
    for as long as frames kept coming, which under a sustained stream was minutes)."""
    from agentcom_skill.watch import FRAME_BATCH, Watch

    class EndlessSocket:
        sent = 0

        def recv(self, timeout=None):
            self.sent += 1
            if self.sent > 50 * FRAME_BATCH:
                raise AssertionError("still reading")
            return json.dumps({"type": "status_changed", "agent": {}})

    taken: list = []
    watch = Watch.__new__(Watch)
    watch._on_frames = taken.extend  # type: ignore[method-assign]
    watch._keep_unread(EndlessSocket(), until=0.0)
    assert len(taken) == FRAME_BATCH, "the frames already read, then it stops"


def test_check_returns_check_max_by_default(tmp_path):
    """One check returns a page (check_max) unless --limit says otherwise; the rest stay
    pending and are counted. (The hub is down here: check serves what the store holds.)"""
    from agentcom_skill.actions.check import check
    from agentcom_skill.actions.common import open_store

    s = settings(check_max=7, hub_url="http://127.0.0.1:9", state_dir=str(tmp_path))
    with open_store(s) as store:
        b = chats(1, 30)
        with store.write():
            store.apply_check(plan_check(b, store.view([], NOW, 0), s, NOW, 0), NOW)
    result = check(settings=s)
    assert len(result["messages"]) == 7 and result["pending"] == 23
    assert len(check(limit=20, settings=s)["messages"]) == 20


def test_inbox_since_reads_the_window_newest_first_through_its_index():
    store = MessageStore.memory()
    for n in range(1, 31):
        b = chats(n, 1)
        with store.write():
            store.apply_check(plan_check(b, store.view([], NOW + n, 0), settings(), NOW + n, 0), NOW + n)
    rows = store.messages(since=NOW + 26, limit=3)
    assert [r["seq"] for r in rows] == [30, 29, 28]
    assert [r["seq"] for r in store.messages(since=NOW + 26, limit=50)] == [30, 29, 28, 27, 26]
    plan = store._read(
        "EXPLAIN QUERY PLAN SELECT rowid, * FROM messages WHERE received_at >= ? ORDER BY received_at DESC,"
        " rowid DESC LIMIT ?",
        (NOW, 3),
    )
    assert any("messages_received" in str(tuple(r)) for r in plan) and not any(
        "TEMP B-TREE" in str(tuple(r)) for r in plan
    )


def test_a_watch_prunes_from_its_wake_thread_keeping_what_its_last_mailbox_read_saw():
    """The watch's drain and sweeps (run_check with prune=False) say what the hub holds and
    prune nothing; the wake thread's step then keeps exactly those."""
    from agentcom_skill.actions.check import run_check
    from agentcom_skill.wakethread import WakeThread

    class Hub:
        def __init__(self, held):
            self.held = held

        def poll(self, agent_id, since=0):
            return self.held

        def ack(self, agent_id, seq):
            return seq

    s = settings(retention_max=2)
    store = store_with(chats(1, 6))
    with store.write():
        store.finish([f"{n:016x}" for n in range(1, 7)], "done", NOW)
    at_hub = chats(1, 1)
    seen: list = []
    run_check(
        Hub(at_hub),
        store,
        s,
        limit=0,
        now=NOW + 7200,
        agents_check=False,
        prune=False,
        on_complete_poll=seen.append,
    )
    assert seen == [[f"{1:016x}"]] and len(store.messages(limit=100)) == 6, "the drain prunes nothing"
    seen_at_hub: list = [None]
    wakes = WakeThread(s, store, None, None, lambda: NOW + 7200, at_hub=lambda: seen_at_hub[0])  # type: ignore[arg-type]
    wakes._prune()
    assert len(store.messages(limit=100)) == 6, "no mailbox read yet: nothing pruned"
    seen_at_hub[0] = tuple(seen[0])  # what the watch's drain noted
    for _ in range(5):
        wakes._prune()
    assert {r["id"] for r in store.messages(limit=100)} == {f"{n:016x}" for n in (1, 5, 6)}


def test_reads_by_many_ids_stay_within_sqlites_parameter_limit():
    """`messages(ids=)`, `sent_messages(ids=)`, `sent_messages(reply_to=)` and `replies_to` with
    more ids than one statement may bind (999 before SQLite 3.32; a build may set less): read in
    chunks, merged in the order one query would give."""
    count = 1200
    ids = [f"{n:016x}" for n in range(1, count + 1)]
    raw = [
        {
            "id": f"{kind}{n:015x}",
            "from": "peer1",
            "to": "gcu",
            "type": "chat",
            "payload": {"text": f"{kind} {n}"},
            "reply_to": ids[n - 1] if kind == "r" else None,
            "timestamp": 1,
            "seq": n if kind == "0" else count + n,
        }
        for kind in ("0", "r")
        for n in range(1, count + 1)
    ]
    batch = parse_mailbox({"messages": raw}, 0)
    store = store_with(batch)
    with store.write():
        for n, parent in enumerate(ids):
            store.record_sent(f"s{n:015x}", "peer0", "chat", {"text": "ok"}, parent, "reply", NOW - n)
    store._db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)

    rows = store.messages(ids=ids, limit=count)
    assert [r["id"] for r in rows] == sorted(ids, key=lambda i: store.resolve(i)["rowid"], reverse=True)
    assert [r["id"] for r in store.messages(ids=ids, limit=3)] == [r["id"] for r in rows[:3]]
    assert {r["id"] for r in store.messages(ids=ids, since=0, limit=count)} == set(ids)
    assert sorted(r["reply_to"] for r in store.replies_to(ids)) == sorted(ids)
    sent = store.sent_messages(ids=[f"s{n:015x}" for n in range(count)])
    assert [r["sent_at"] for r in sent] == sorted(NOW - n for n in range(count)), "oldest first"
    assert len(store.sent_messages(reply_to=ids)) == count
