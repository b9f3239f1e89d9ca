"""Fast unit tests of the pure core: configuration, state file, delivery planning."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as settings_h
from hypothesis import strategies as st

from agentcom_skill.actions.check import prune_store, run_check
from agentcom_skill.config import load_settings
from agentcom_skill.delivery import batch_keys, hub_prefix, plan_check
from agentcom_skill.errors import ConfigError, HubProtocolError, StateError
from agentcom_skill.message import parse_mailbox, parse_mailbox_bytes
from agentcom_skill.migrations import MIGRATIONS, statements
from agentcom_skill.store import MessageStore, row_message
from agentcom_skill.watch import PushedFrames

TOKEN = "a1" * 32


def settings(tmp_path, **over):
    base = {
        "hub_url": "http://hub:4000",
        "agent_id": "gcu",
        "token": TOKEN,
        "state_dir": str(tmp_path),
        "config": str(tmp_path / "none.toml"),
    }
    return load_settings({**base, **over}, env={})


# configuration -------------------------------------------------------------------------


def test_precedence_cli_over_env_over_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'hub_url = "http://file:1"\nagent_id = "from-file"\ntoken = "'
        + "f" * 64
        + '"\nlease_seconds = 60\ncapabilities = ["Code"]\n'
    )
    env = {"AGENTCOM_CONFIG": str(cfg), "AGENTCOM_AGENT_ID": "from-env", "AGENTCOM_STATE_DIR": str(tmp_path)}
    s = load_settings({"hub_url": "http://cli:2/"}, env=env)
    assert (s.hub_url, s.agent_id, s.token, s.lease_seconds, s.capabilities) == (
        "http://cli:2",
        "from-env",
        "f" * 64,
        60.0,
        ("Code",),
    )
    assert s.sources["hub_url"] == "the command line"
    assert s.sources["agent_id"] == "environment variable AGENTCOM_AGENT_ID"
    assert s.sources["token"].startswith("config file")


def test_every_unknown_key_is_named_at_once_with_its_likely_meaning(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'hub_ulr = "http://h:1"\ncapabilites = ["x"]\nlease_secnds = 3\nfrobnicate = 1\nwindow = 3\n'
        '[wake]\nurl = "http://127.0.0.1:18789"\nmdoe = "agent"\nignore_from = ["x"]\n'
    )
    with pytest.raises(ConfigError) as err:
        settings(tmp_path, config=str(cfg))
    text = str(err.value)
    for wrong, meant in [
        ("hub_ulr", "hub_url"),
        ("capabilites", "capabilities"),
        ("lease_secnds", "lease_seconds"),
        ("wake.mdoe", "wake.mode"),
        ("window", "wake.window? it goes under [wake]"),  # a wake key above the [wake] line
        ("wake.ignore_from", "ignore_from? it goes before the [wake] line"),  # and a top-level one below it
    ]:
        assert f"{wrong!r} (did you mean {meant}" in text, (wrong, text)
    assert "'frobnicate' (no such setting)" in text and len(text.splitlines()) == 1


def test_the_token_is_never_in_repr_or_public_view(tmp_path):
    s = settings(tmp_path)
    assert TOKEN not in repr(s)
    assert TOKEN not in json.dumps(s.public())
    assert s.public()["token"] == "****" + TOKEN[-4:]


@pytest.mark.parametrize(
    "over,needle",
    [
        ({"hub_url": "ftp://x"}, "hub_url"),
        ({"agent_id": "bad\x1bid"}, "agent_id"),
        ({"token": "has space inside"}, "token"),
        ({"lease_seconds": -1}, "lease_seconds"),
        ({"max_deliveries": "many"}, "max_deliveries"),
        ({"lease_seconds": float("inf")}, "lease_seconds from .* must be a finite number"),
        ({"lock_timeout": float("nan")}, "lock_timeout from .* must be a finite"),
        ({"read_timeout": float("-inf")}, "read_timeout from .* must be a finite"),
        ({"retention_max": 10**11}, "retention_max from .* at most 1,000,000,000"),
    ],
)
def test_invalid_settings_name_themselves(tmp_path, over, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        settings(tmp_path, **over)
    assert TOKEN not in str(info.value)


def test_state_folder_is_per_hub_and_agent(tmp_path):
    a = settings(tmp_path).agent_state_dir()
    b = settings(tmp_path, hub_url="http://other:4000").agent_state_dir()
    c = settings(tmp_path, agent_id="other").agent_state_dir()
    assert len({a, b, c}) == 3 and all(p.parent == tmp_path for p in (a, b, c))


# the message store --------------------------------------------------------------------


def test_store_is_private_migrated_and_an_idle_open_writes_nothing(tmp_path):
    store = MessageStore.open(tmp_path / "s")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store._read("PRAGMA user_version")[0][0] == len(MIGRATIONS)
    assert [r[0] for r in store._read("SELECT version FROM migrations ORDER BY version")] == list(
        range(1, len(MIGRATIONS) + 1)
    )
    store.close()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "s").iterdir()}
    again = MessageStore.open(tmp_path / "s")
    again.view([], 1.0)
    again.close()
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "s").iterdir() if p.name in before} == before


def test_migrations_apply_from_the_oldest_schema_and_keep_data(tmp_path):
    """A store created at schema 1 (no search index) with messages in it gains FTS on open."""
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at REAL)")
    for statement in statements(MIGRATIONS[0][1]):
        db.execute(statement)
    db.execute("INSERT INTO migrations VALUES (1, 'x', 0)")
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO messages (id, seq, sender, type, body, via, received_at, text, disposition, state)"
        " VALUES ('00000000000000aa', 1, 'loash', 'chat', ?, 'poll', 1, 'the rate limiter branch', 'attention', "
        "'pending')",
        (
            json.dumps(
                {
                    "id": "00000000000000aa",
                    "from": "loash",
                    "to": "gcu",
                    "type": "chat",
                    "payload": {"text": "the rate limiter branch"},
                    "reply_to": None,
                    "timestamp": 1,
                    "seq": 1,
                }
            ),
        ),
    )
    db.close()
    store = MessageStore(path)
    assert store._read("PRAGMA user_version")[0][0] == len(MIGRATIONS)
    assert [r["id"] for r in store.search("limiter")] == ["00000000000000aa"]
    assert store.view([], 2.0).open[0].msg.text == "the rate limiter branch"


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.sqlite3"
    MessageStore(path).close()
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StateError, match="newer agentcom"):
        MessageStore(path)


def test_search_falls_back_to_a_plain_scan(tmp_path):
    store = MessageStore.memory()
    apply(store, batch((1, "loash", "chat", {"text": "100% of the rate_limiter"})), settings(tmp_path), 1.0)
    assert len(store.search("100%")) == 1
    store.set_meta("fts", 0)
    assert len(store.search("rate_limiter")) == 1 and store.search("zzz") == []


def test_the_search_index_catches_up_at_search_time_and_survives_pruning_and_rowid_reuse(tmp_path):
    """Migration 3: rows are indexed when `search` runs, not as they are stored. Pruning the
    newest rows lets SQLite reuse their rowids; the index must never claim a row it lacks."""
    s = settings(tmp_path)
    store = MessageStore.memory()
    apply(
        store,
        batch(*[(n, "loash", "chat", {"action": "notify", "text": f"alpha {n}"}) for n in range(1, 4)]),
        s,
        1000.0,
    )
    assert store._read("SELECT COUNT(*) FROM messages_fts_docsize")[0][0] == 0, "nothing indexed while storing"
    assert len(store.search("alpha")) == 3
    apply(store, batch((4, "nathan", "chat", {"action": "notify", "text": "beta"})), s, 1001.0)
    assert [r["seq"] for r in store.search("beta")] == [4]
    assert prune(store, [], 1000.0 + 31 * 86400, days=30, most=50_000) == 4, "every row, the newest included"
    apply(store, batch((5, "nathan", "chat", {"action": "notify", "text": "gamma"})), s, 2000.0 + 31 * 86400)
    assert [r["seq"] for r in store.search("gamma")] == [5] and store.search("alpha") == []
    store._exec("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")


def test_a_damaged_sent_row_is_set_aside_not_fatal(tmp_path):
    store = MessageStore.memory()
    with store.write():
        store.record_sent("00000000000000a1", "bob", "chat", {"text": "fine"}, None, "send", 1.0)
        store.record_sent("00000000000000a2", "bob", "chat", {"text": "soon broken"}, None, "send", 2.0)
    store._exec("UPDATE sent SET payload = '{' WHERE id = '00000000000000a2'")
    assert [r["id"] for r in store.sent_messages()] == ["00000000000000a1"]
    with store.write():
        pass
    assert store._read("SELECT key, kind FROM set_aside")[0][:] == ("00000000000000a2", "damaged")
    assert [r["id"] for r in store.sent_messages()] == ["00000000000000a1"] and len(store.warnings) == 1


def test_the_schema_columns_the_store_checks_are_the_migrations_result():
    from agentcom_skill.migrations import SCHEMA_COLUMNS

    store = MessageStore.memory()
    for table, columns in SCHEMA_COLUMNS.items():
        assert tuple(r[1] for r in store._read(f"PRAGMA table_info({table})")) == columns


# The migrations as released: stores on disk were made by exactly these, in this order. A
# change of schema is a new migration appended (this list then stays as it is).
RELEASED_MIGRATIONS = [
    "b80c64d1729574d4",
    "e106e9e736dfad4d",
    "8ec9c9033c048cfe",
    "ecfeb3a4cd08c7f4",
    "b95a18aac220c6d8",
    "c3ac98cfd74a2f68",
    "e78bead2e30657ce",
    "43fa9fa88406aaa7",
    "eb19bceecac8ecf0",
]


def test_released_migrations_never_change():
    from agentcom_skill import migrations

    def digest(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    released = [digest(f"{name}\0{sql}") for name, sql in MIGRATIONS[: len(RELEASED_MIGRATIONS)]]
    assert released == RELEASED_MIGRATIONS, "a released migration was edited or moved: append a new one instead"
    # the SQL the words "FTS5", "LAZY_FTS" and "SCALE" stand for
    built_in = (migrations._FTS_SQL, migrations._LAZY_FTS_SQL, migrations._SCALE_SQL)
    assert [digest(sql) for sql in built_in] == ["fadc0cd3ed00d505", "1befa5eaa7db847e", "9bc897f02f09acfb"]


# delivery planning ---------------------------------------------------------------------


def batch(*msgs):
    raw = []
    for seq, sender, type_, payload in msgs:
        raw.append(
            {
                "id": f"{seq:08x}{abs(hash(sender)) % 16**8:08x}",
                "from": sender,
                "to": "gcu",
                "type": type_,
                "payload": payload,
                "reply_to": None,
                "timestamp": 1,
                "seq": seq,
            }
        )
    return parse_mailbox({"messages": raw}, 0)


def apply(store, b, s, now, limit=None):
    """One check's decision, as run_check makes it: view, plan, apply, all in one transaction."""
    with store.write():
        plan = plan_check(b, store.view([m.id for m in b.messages], now), s, now, limit)
        store.apply_check(plan, now)
    store_confirm = [m["id"] for m in plan.messages]
    with store.write():
        store.confirm_shown(store_confirm)
    return plan


def test_the_cap_warning_counts_what_the_hub_holds_not_a_burst_of_pushed_frames(tmp_path):
    s = settings(tmp_path, mailbox_cap=10)
    polled = batch(*[(seq, "loash", "chat", {"text": f"m{seq}"}) for seq in range(1, 9)])
    pushed = polled._replace(entries=())  # what the watch builds from frames: the hub stored none of them
    warned = [
        [w for w in plan_check(b, MessageStore.memory().view([], 1.0), s, 1.0).warnings if "hub's cap" in w]
        for b in (polled, pushed)
    ]
    assert len(warned[0]) == 1 and "80%" in warned[0][0] and warned[1] == []


def test_auto_reply_budget_holds_across_runs(tmp_path):
    s = settings(tmp_path, auto_reply_limit=2)
    store = MessageStore.memory()
    sent = []
    for run in range(4):  # one ping per run from the same sender, within one minute
        plan = apply(store, batch((run + 1, "nathan", "ping", {})), s, now=1000.0 + run)
        sent += plan.replies
    assert len(sent) == 2
    rows = sorted(store.messages(limit=10), key=lambda r: r["seq"])
    assert [r["disposition"] for r in rows] == ["auto_reply", "auto_reply", "store", "store"]
    assert "auto-reply limit" in rows[-1]["reason"]
    plan = apply(store, batch((9, "nathan", "ping", {})), s, now=1100.0)  # a minute later
    assert len(plan.replies) == 1


def test_regression_is_detected_and_known_ids_are_not_reprocessed(tmp_path):
    s = settings(tmp_path)
    store = MessageStore.memory()
    apply(store, batch((50, "loash", "chat", {"text": "a"})), s, now=1.0)
    assert store.get_meta("cursor") == 50
    b = batch((50, "loash", "chat", {"text": "a"}), (2, "loash", "chat", {"text": "b"}))
    plan = apply(store, b, s, now=2.0)
    assert [m["id"] for m in plan.messages] == [b.messages[0].id]
    assert any("went backwards" in w for w in plan.warnings)


def test_hub_prefix_stops_at_the_first_unfinished(tmp_path):
    s = settings(tmp_path)
    store = MessageStore.memory()
    b = batch((1, "a", "status", {"status": "x"}), (2, "a", "chat", {"text": "hi"}), (3, "a", "ack", {}))
    ids = [m.id for m in b.messages]
    apply(store, b, s, now=1.0)
    assert hub_prefix(b, store.finished(ids)) == 1
    with store.write():
        store.finish([ids[1]], "done", 2.0)
    assert hub_prefix(b, store.finished(ids)) == 3


def test_a_leased_but_never_printed_message_cannot_be_acked(tmp_path):
    s = settings(tmp_path)
    store = MessageStore.memory()
    b = batch((1, "a", "chat", {"text": "hi"}))
    with store.write():
        store.apply_check(plan_check(b, store.view([b.messages[0].id], 1.0), s, 1.0), 1.0)
    assert store.shown_open() == [], "leased by a run that died before printing"
    assert store.resolve(1)["state"] == "leased"


def test_lone_surrogates_are_kept_exactly_in_the_body(tmp_path):
    store = MessageStore.memory()
    b = parse_mailbox(
        {
            "messages": [
                {
                    "id": "00000000000000ff",
                    "from": "bo\ud800b",
                    "to": "gcu",
                    "type": "chat",
                    "payload": {"text": "x\udfff"},
                    "reply_to": None,
                    "timestamp": 1,
                    "seq": 1,
                }
            ]
        },
        0,
    )
    apply(store, b, settings(tmp_path), 1.0)
    row = store.resolve(1)
    assert row_message(row).sender == "bo\ud800b" and row["sender"].startswith("bo\ufffd")


def test_malformed_hub_bodies_are_protocol_errors():
    """The reply as a whole must have the contract's shape: else exit 5, nothing changed."""
    for body in ([], {"messages": "x"}, {"agent_id": "gcu"}, {"messages": [], "last_seq": "7"}):
        with pytest.raises(HubProtocolError):
            parse_mailbox(body, 0)
    for raw in (b"<html>", b"", b'{"messages": [', "\udcff".encode("utf-8", "surrogatepass")):
        with pytest.raises(HubProtocolError):
            parse_mailbox_bytes(raw, 0)


def good(n: int, **fields) -> dict:
    return {
        "id": f"{n:016x}",
        "from": "bob",
        "to": "gcu",
        "type": "chat",
        "payload": {"text": f"m{n}"},
        "reply_to": None,
        "timestamp": 1,
        "seq": n,
        **fields,
    }


@pytest.mark.parametrize(
    "bad,readable",
    [
        ({"seq": True}, {"id": "0000000000000002"}),
        ({"payload": []}, {"id": "0000000000000002", "seq": 2}),
        ({"timestamp": float("inf")}, {"id": "0000000000000002", "seq": 2}),
        ({"seq": 10**30}, {"id": "0000000000000002"}),
        ({"id": "a\x1b"}, {"seq": 2}),
        ({"payload": json.loads("[" * 150 + "]" * 150)}, {"id": "0000000000000002", "seq": 2}),
    ],
)
def test_one_unreadable_entry_is_set_aside_and_the_others_are_read(bad, readable):
    """Issue 19.2: one entry the client cannot read must not take the batch with it."""
    b = parse_mailbox({"messages": [good(1), good(2, **bad), good(3)]}, 0)
    assert [m.seq for m in b.messages] == [1, 3]
    (item,) = b.unreadable
    assert item.sender == "bob" and all(getattr(item, k) == v for k, v in readable.items()), item
    assert item.raw and item.reason


def test_a_body_too_deep_for_the_parser_is_split_into_its_entries():
    """Nesting past Python's recursion limit, and NaN: only the entry holding it is lost to
    reading; its id, seq and sender are still read; the hub's prefix ack can pass it."""
    deep = '{"k": ' + "[" * 100_000 + "]" * 100_000 + "}"
    entries = [
        json.dumps(good(1)),
        json.dumps(good(2)).replace('{"text": "m2"}', deep),
        json.dumps(good(3)).replace('"timestamp": 1', '"timestamp": NaN'),
        json.dumps(good(4)),
    ]
    raw = ('{"agent_id": "gcu", "messages": [' + ", ".join(entries) + '], "last_seq": 4, "count": 4}').encode()
    b = parse_mailbox_bytes(raw, 0)
    assert [m.seq for m in b.messages] == [1, 4] and b.last_seq == 4
    assert [(u.seq, u.id, u.sender) for u in b.unreadable] == [
        (2, "0000000000000002", "bob"),
        (3, "0000000000000003", "bob"),
    ]
    assert "deeper" in b.unreadable[0].reason and "NaN" in b.unreadable[1].reason
    assert hub_prefix(b, {"0000000000000001", "0000000000000002"}) == 2
    assert hub_prefix(b, {m.id for m in b.messages} | {u.id for u in b.unreadable}) == 4


def test_the_same_id_twice_in_one_poll_is_one_message():
    """Issue 19.7: numbered once, one body; the hub is acked past both copies together."""
    b = parse_mailbox({"messages": [good(1), good(2), dict(good(5), id=good(1)["id"])]}, 0)
    assert [m.seq for m in b.messages] == [1, 2]
    assert hub_prefix(b, {good(1)["id"]}) == 1
    assert hub_prefix(b, {good(1)["id"], good(2)["id"]}) == 5


def prune(store, keep, now, days, most):
    """A whole pruning pass (its steps), with nothing pending long enough to be dead-lettered."""
    s = settings(Path("/nonexistent"), retention_days=days, retention_max=most, open_max_days=3650)
    return prune_store(store, s, keep, now, 60.0)[0]


def test_retention_drops_only_old_finished_messages_the_hub_no_longer_holds(tmp_path):
    s = settings(tmp_path)
    store = MessageStore.memory()
    b = batch(
        *[(n, "loash", "chat", {"action": "notify", "text": f"n{n}"}) for n in range(1, 6)],
        (6, "loash", "chat", {"text": "open"}),
    )
    apply(store, b, s, now=1000.0)
    ids = [m.id for m in b.messages]
    assert prune(store, ids[:1], 1000.0 + 31 * 86400, days=30, most=50_000) == 4, "kept: one at the hub, one open"
    assert prune(store, [], 1000.0 + 31 * 86400 + 10, days=30, most=50_000) == 0, "at most once an hour"
    left = {r["id"] for r in store.messages(limit=100)}
    assert left == {ids[0], ids[5]}
    apply(store, batch(*[(n, "nathan", "ack", {}) for n in range(10, 20)]), s, now=2000.0)
    prune(store, [], 2000.0 + 7200, days=30, most=3)
    left = store.messages(limit=100)
    assert len(left) == 4 and ids[5] in {r["id"] for r in left}, "the newest 3 finished, and the open one"


def test_only_a_run_that_read_the_whole_mailbox_prunes(tmp_path):
    """Pruning keeps what the hub still holds, which only a poll knows: a finished message
    behind an unfinished one stays at the hub (the prefix ack waits), and pruning it in a run
    that read no mailbox (pushed frames, a check served from the store while the watch runs)
    made the next poll take it for new (found by a hostile pass)."""
    s = settings(tmp_path, retention_max=2)
    store = MessageStore.memory()
    at_hub = batch(*[(n, "loash", "chat", {"text": f"m{n}"}) for n in range(1, 6)])
    first = apply(store, at_hub, s, now=1000.0)
    with store.write():
        store.finish([m["id"] for m in first.messages[1:]], "done", 1000.0)  # m1 stays open: the hub keeps all
    run_check(None, store, s, limit=None, now=1000.0 + 2 * 3600)  # served from the store alone
    pushed = PushedFrames(None, batch()._replace(entries=()))
    run_check(pushed, store, s, limit=None, now=1000.0 + 4 * 3600, via="push", agents_check=False)
    assert len(store.messages(limit=100)) == 5, "nothing pruned without a poll"
    again = run_check(ModelHub(at_hub), store, s, limit=None, now=1000.0 + 6 * 3600, agents_check=False)
    assert [m["seq"] for m in again["messages"]] == [1], "m1 again (its lease ran out), and nothing acked as new"
    assert len(store.messages(limit=100)) == 5, "a poll prunes, but never what the hub holds"


def test_an_entry_with_no_sender_or_no_id_and_seq_is_set_aside_listed_and_known_next_time(tmp_path):
    """Found by a hostile pass: an entry without `from` was set aside but hidden from
    `inbox --state dead`; one with neither a readable id nor a seq was dropped without a word."""
    from agentcom_skill.actions.history import history_entry
    from agentcom_skill.render import render_history_text

    s = settings(tmp_path)
    store = MessageStore.memory()
    body = (
        '{"messages": [{"seq": 1, "id": "' + "c" * 16 + '", "to": "gcu", "type": "chat", "payload": {}},'
        ' {"seq": "two", "from": "loash", "payload": {"text": "odd"}},'
        ' {"seq": 3, "id": "' + "d" * 16 + '", "from": "loash", "to": "gcu", "type": "chat", "payload": {"text": "ok"}}'
        '], "last_seq": 3}'
    )
    polled = parse_mailbox_bytes(body.encode(), 0)
    plan = apply(store, polled, s, now=1.0)
    assert [m["id"] for m in plan.messages] == ["d" * 16]
    assert len([w for w in plan.warnings if w.startswith("set aside")]) == 2
    dead = store.messages(state="dead", limit=10)
    assert len(dead) == 2 and "c" * 16 in {r["id"] for r in dead}
    assert "unreadable" in render_history_text([history_entry(r) for r in dead], "none")
    again = plan_check(polled, store.view(batch_keys(polled), 2.0), s, 2.0)
    assert not [w for w in again.warnings if w.startswith("set aside")], "known: not set aside twice"
    from agentcom_skill.actions.refs import parse_ref

    keyed = [r["id"] for r in dead if r["id"].startswith("unreadable-")]
    assert keyed and all(store.resolve(parse_ref(key)) is not None for key in keyed), "`show KEY` names it"


@settings_h(max_examples=200, deadline=None)
@given(
    texts=st.lists(
        st.text(st.sampled_from('"\\{}[],: \u00e9\u2603') | st.characters(blacklist_categories=("Cs",)), max_size=12),
        min_size=1,
        max_size=5,
    ),
    cut=st.integers(min_value=0, max_value=10_000),
)
def test_a_mailbox_reply_cut_anywhere_yields_its_whole_messages_before_the_cut(texts, cut):
    """A reply over max_response_bytes is read that far: the messages complete before the cut
    are taken, each whole (never one cut short and set aside as broken), in order."""
    check_cut_mailbox(texts, cut)


def test_a_cut_inside_a_text_that_looks_like_the_end_of_an_entry_is_not_an_entry():
    texts = ['a}},{"seq": 9},[', "\\}],", "b"]
    for cut in range(600):
        check_cut_mailbox(texts, cut)


def test_a_cut_inside_a_long_text_of_quotes_is_read_in_one_pass():
    """Found by a hostile pass: a cut inside a string of escaped quotes made the scan restart
    at each of them (quadratic: 80,000 quotes took 48 s, and one sender could stall every
    check for hours). A cut string is now one token up to the end."""
    check_cut_mailbox(["ok", '"' * 100_000, "after"], 120_000)


def check_cut_mailbox(texts: list[str], cut: int) -> None:
    head = '{"agent_id":"gcu","messages":['
    entries = [
        json.dumps(
            {"seq": n, "id": f"{n:016x}", "from": "loash", "to": "gcu", "type": "chat", "payload": {"text": t}},
            ensure_ascii=False,
        )
        for n, t in enumerate(texts, 1)
    ]
    data = (head + ",".join(entries) + '],"last_seq":' + str(len(texts)) + "}").encode()
    cut %= len(data) + 1
    ends = [len((head + ",".join(entries[: k + 1])).encode()) + 1 for k in range(len(entries))]  # past its , or ]
    whole = [f"{k + 1:016x}" for k, end in enumerate(ends) if end <= cut]
    try:
        got = parse_mailbox_bytes(data[:cut], 0, complete=False, limit=cut)
    except HubProtocolError:
        assert whole == []
        return
    assert [m.id for m in got.messages] == whole and got.unreadable == () and not got.complete
    assert [m.text for m in got.messages] == texts[: len(whole)]
    assert parse_mailbox_bytes(data, 0).complete and len(parse_mailbox_bytes(data, 0).messages) == len(texts)


def test_a_poison_entry_has_one_key_whether_the_reply_was_read_whole_or_cut():
    """Found by a hostile pass: an entry with neither id nor seq was keyed by a digest of its
    text as sent when read from a cut reply, and as re-serialised when read whole: set aside twice."""
    poison = '{"seq":"two","from":"loash","payload":{"text":"odd"}}'
    good = [
        json.dumps(
            {"seq": n, "id": f"{n:016x}", "from": "loash", "to": "gcu", "type": "chat", "payload": {"text": "ok"}}
        )
        for n in (3, 4)
    ]
    body = ('{"agent_id":"gcu","messages":[' + ",".join([poison, *good]) + '],"last_seq":4}').encode()
    whole, cut = parse_mailbox_bytes(body, 0), parse_mailbox_bytes(body[:-20], 0, complete=False, limit=1)
    assert [m.seq for m in cut.messages] == [3] and len(cut.unreadable) == len(whole.unreadable) == 1
    assert cut.unreadable[0].key == whole.unreadable[0].key


def test_a_clock_set_back_after_running_ahead_holds_no_lease_or_defer_for_the_jump(tmp_path):
    """Issue 27, item 6: checked and deferred while the clock was a year ahead, then corrected:
    the 5 s lease and the 1 min defer are over at once (never later than their length from
    now), for the check, the wake's count and `status` alike; leases and defers taken on the
    corrected clock, and one another run took a little later than our reading, last as asked."""
    s = settings(tmp_path, lease_seconds=5)
    store = MessageStore.open(tmp_path / "store")
    real, ahead = 1_000_000.0, 1_000_000.0 + 365 * 86400
    b = batch((1, "a", "chat", {"text": "leased"}), (2, "a", "chat", {"text": "deferred"}))
    leased, deferred = (m.id for m in b.messages)
    assert {m["id"] for m in apply(store, b, s, now=ahead).messages} == {leased, deferred}
    with store.write():
        store.defer([deferred], ahead + 60, ahead)
    assert store.deliverable_ids(ahead + 1) == [] and store.counts(ahead + 1)["in_lease"] == 1

    now = real + 10  # the clock corrected
    assert sorted(store.deliverable_ids(now)) == sorted([leased, deferred])
    assert store.counts(now)["in_lease"] == 0
    plan = apply(store, batch(), s, now=now)
    assert {m["id"]: m["redelivered"] for m in plan.messages} == {leased: True, deferred: True}

    assert store.deliverable_ids(now + 4) == [], "a lease taken on the corrected clock lasts its 5 s"
    assert sorted(store.deliverable_ids(now + 5)) == sorted([leased, deferred])
    with store.write():
        store.defer([deferred], now + 86400, now)
    assert store.deliverable_ids(now + 3600) == [leased], "a day's defer on the right clock lasts a day"
    assert store.deliverable_ids(now - 120) == [], "a run that read the clock 2 min before another leased"


class ModelHub:
    """A hub that holds `held` and takes acks (nothing is sent in these tests)."""

    def __init__(self, held):
        self.held = held

    def poll(self, agent_id, since=0):
        return self.held

    def ack(self, agent_id, seq):
        return seq


@pytest.mark.slow  # starts a subprocess
def test_a_second_store_in_one_process_keeps_the_first_ones_commits_visible(tmp_path):
    """Regression: opening a second connection used to open and close the database file,
    which drops this process's POSIX locks on it; another process's close then deleted the
    WAL under us and our later commits were seen by nobody (the watch holds two stores)."""
    import subprocess
    import sys

    folder = tmp_path / "s"
    first = MessageStore.open(folder)
    second = MessageStore.open(folder)
    code = (
        "import sys; from agentcom_skill.store import MessageStore; s = MessageStore.open(sys.argv[1]);"
        " print(s.get_meta('probe')); s.close()"
    )
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True, capture_output=True)  # opens and closes
    with first.write():
        first.set_meta("probe", 42)
    seen = subprocess.run(
        [sys.executable, "-c", code, str(folder)], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert seen == "42"
    first.close()
    second.close()
