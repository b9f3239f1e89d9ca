"""Protocol part 4, against the real hub in subprocesses; each test names the guarantee it proves."""

from __future__ import annotations

import json
import random
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import agent_env, load_trace, run_cli, run_json
from faultproxy import FaultProxy


def write_config(tmp_path: Path, agent: str, **settings) -> None:
    lines = []
    for k, v in settings.items():
        lines.append(f"{k} = {json.dumps(v)}")
    (tmp_path / f"{agent}.toml").write_text("\n".join(lines) + "\n")


def state_files(tmp_path: Path) -> dict[str, list]:
    """The logical content of every message store under tmp_path/state (rows, not bytes:
    a rolled-back transaction may leave WAL frames that no reader ever sees)."""
    import sqlite3

    root = tmp_path / "state"
    out = {}
    for p in root.rglob("messages.sqlite3") if root.exists() else []:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            out[str(p)] = [
                db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                for t in ("messages", "meta", "auto_replies", "sent", "peers")
            ]
        finally:
            db.close()
    return out


@pytest.fixture
def duo(hub, tmp_path):
    alice, bob = hub.mint("alice"), hub.mint("bob")
    env = agent_env(hub, "alice", alice, tmp_path)
    return hub, env, alice, bob


def post(hub, token, to, n, **payload):
    return [hub.post(token, {"to": to, "payload": {"text": f"m{i}", **payload}}).json()["id"] for i in range(n)]


# guarantee 8: hub faults ------------------------------------------------------------

FAULT_CASES = [
    ("500", 4),
    ("502", 4),
    ("503", 4),
    ("429", 4),
    ("timeout", 4),
    ("reset", 4),
    ("non_json", 5),
    ("empty", 5),
    ("missing_messages", 5),
    ("messages_not_list", 5),
    ("huge", 5),
    ("gzip_bomb", 5),
    ("corrupt_gzip", 5),
    ("wrong_encoding", 5),
]


@pytest.mark.parametrize("fault,code", FAULT_CASES)
def test_hub_fault_gives_its_exit_code_changes_nothing_and_recovers(duo, tmp_path, fault, code):
    """Guarantee 8: each hub fault gives one clear line and its exit code, leaves the state
    unchanged, and a later normal check delivers everything. Fails without HubClient's
    error mapping (a traceback or exit 1) or without validation before state changes."""
    hub, env, alice, bob = duo
    write_config(tmp_path, "alice", read_timeout=1.0, max_response_bytes=100_000)
    proxy = FaultProxy(hub.url)
    proxy.delay = 3.0  # the "timeout" fault: well past the read timeout
    try:
        env = {**env, "AGENTCOM_HUB_URL": proxy.url}
        first = set(post(hub, bob, "alice", 2))
        assert {m["id"] for m in run_json("check", env=env)["messages"]} == first
        later = set(post(hub, bob, "alice", 3))
        post(hub, bob, "alice", 1, action="ping")
        before = state_files(tmp_path)
        proxy.arm(fault, path_prefix="/api/mailbox")
        out = run_cli("check", env=env)
        assert out.returncode == code, (out.stdout, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
        assert alice not in out.stdout + out.stderr
        assert state_files(tmp_path) == before
        assert all(m["from"] != "alice" for m in hub.poll("bob", bob)["messages"]), "no pong sent"
        proxy.arm(None)
        result = run_json("check", env=env)
        assert {m["id"] for m in result["messages"]} == later
        assert result["handled"]["auto_reply"] == 1
    finally:
        proxy.close()


@pytest.mark.parametrize("fault", ["seq_not_int", "payload_not_object", "nan_timestamp", "inf_timestamp", "deep"])
def test_one_unreadable_message_does_not_block_the_mailbox(duo, tmp_path, fault):
    """Issue 19.2: a mailbox entry the client cannot read (nested 100,000 deep, NaN, a payload
    that is not an object, ...) is set aside as a poison record, reported once and acked past;
    every other message is delivered as usual."""
    hub, env, alice, bob = duo
    proxy = FaultProxy(hub.url)
    try:
        env = {**env, "AGENTCOM_HUB_URL": proxy.url}
        later = set(post(hub, bob, "alice", 3))
        post(hub, bob, "alice", 1, action="ping")
        proxy.arm(fault, path_prefix="/api/mailbox")
        faulty = run_cli("check", "--json", env=env)
        assert faulty.returncode == 0 and "Traceback" not in faulty.stderr, faulty.stderr
        first = json.loads(faulty.stdout)
        set_aside = [w for w in first["warnings"] if "set aside" in w]
        if fault == "seq_not_int":  # a broken second copy of a message read fine: nothing to set aside
            assert not set_aside
        else:
            assert len(set_aside) == 1 and "bob" not in set_aside[0], first["warnings"]
            dead = run_json("inbox", "--state", "dead", env=env)["messages"]
            assert len(dead) == 1 and "unreadable" in dead[0]["why"]
        proxy.arm(None)
        second = run_json("check", env=env)
        assert not [w for w in second["warnings"] if "set aside" in w], "reported once"
        assert {m["id"] for m in first["messages"] + second["messages"]} == later
        assert first["handled"]["auto_reply"] + second["handled"]["auto_reply"] == 1
        assert alice not in faulty.stdout + faulty.stderr
    finally:
        proxy.close()


def test_a_mailbox_over_max_response_bytes_is_taken_a_part_at_a_time(duo, tmp_path):
    """Found by a hostile pass: a few huge messages (any sender may post 8 MB) made every
    check fail, the urgent one behind them never delivered. The reply is read up to
    max_response_bytes and the messages complete in it are taken; the rest follow as these
    are finished."""
    hub, env, alice, bob = duo
    write_config(tmp_path, "alice", max_response_bytes=900)
    sent = post(hub, bob, "alice", 6, filler="x" * 150)
    seen: list[str] = []
    for _ in range(6):
        out = run_cli("check", "--json", env=env)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        ids = [m["id"] for m in result["messages"]]
        assert ids and not set(ids) & set(seen), "each message once, in order"
        seen += ids
        if len(seen) < len(sent):
            assert any("max_response_bytes" in w for w in result["warnings"]), result["warnings"]
        assert run_cli("ack", "--json", env=env).returncode == 0
        if len(seen) == len(sent):
            break
    assert seen == sent and hub.poll("alice", alice)["messages"] == []


def test_429_with_a_short_retry_after_is_honoured(duo, tmp_path):
    """Guarantee 8 / HTTP: a 429 whose retry-after fits the bound is waited out, not an error."""
    hub, env, alice, bob = duo
    proxy = FaultProxy(hub.url)
    try:
        proxy.retry_after = "1"
        post(hub, bob, "alice", 1)
        proxy.arm("429", times=1, path_prefix="/api/mailbox")
        started = time.monotonic()
        result = run_json("check", env={**env, "AGENTCOM_HUB_URL": proxy.url})
        assert len(result["messages"]) == 1 and time.monotonic() - started >= 1.0
        assert [s for _, p, s in proxy.seen if p.startswith("/api/mailbox")][:2] == [429, 200]
    finally:
        proxy.close()


def test_transient_503_is_retried(duo):
    """HTTP retries: two 503s on an idempotent poll are retried with backoff, then it works."""
    hub, env, alice, bob = duo
    proxy = FaultProxy(hub.url)
    try:
        post(hub, bob, "alice", 1)
        proxy.arm("503", times=2, path_prefix="/api/mailbox")
        assert len(run_json("check", env={**env, "AGENTCOM_HUB_URL": proxy.url})["messages"]) == 1
    finally:
        proxy.close()


# guarantee 2 and 6: leases, redelivery, dead letters -----------------------------------


def test_lease_redelivery_and_dead_letter(duo, tmp_path):
    """Guarantees 2 and 6: a returned message is not returned again while leased; after the
    lease it comes back flagged and counted; after max_deliveries it is dead-lettered,
    reported once, and acked at the hub so it stops blocking the prefix. The real hub and
    store, with the time injected (a check's `now`), so no assertion waits on the clock."""
    from agentcom_skill.actions.check import run_check
    from agentcom_skill.actions.common import hub_client, open_store
    from agentcom_skill.config import load_settings

    hub, env, alice, bob = duo
    write_config(tmp_path, "alice", lease_seconds=60, max_deliveries=2)
    settings = load_settings({}, env=env)
    (msg_id,) = post(hub, bob, "alice", 1)
    start = time.time()

    def check(after: float) -> dict:
        with hub_client(settings) as client, open_store(settings) as store:
            return run_check(client, store, settings, limit=None, now=start + after)

    first = check(0)["messages"]
    assert [(m["id"], m["redelivered"], m["deliveries"]) for m in first] == [(msg_id, False, 1)]
    assert check(59)["messages"] == [], "leased"
    again = check(61)["messages"]
    assert [(m["id"], m["redelivered"], m["deliveries"]) for m in again] == [(msg_id, True, 2)]
    dead = check(122)
    assert dead["messages"] == [] and len(dead["warnings"]) == 1 and "dead-lettered" in dead["warnings"][0]
    assert check(123)["warnings"] == [], "reported once"
    assert run_json("status", env=env)["dead_letters"] == 1
    assert run_json("log", env=env)["dead_letters"][0]["id"] == msg_id
    assert hub.poll("alice", alice)["messages"] == []


def test_prefix_ack_waits_for_unfinished_messages(duo):
    """Guarantee 4: the hub is acked only up to the highest seq with nothing unfinished below."""
    hub, env, alice, bob = duo
    (chat,) = post(hub, bob, "alice", 1)
    post(hub, bob, "alice", 2, action="notify")
    run_json("check", env=env)
    at_hub = hub.poll("alice", alice)["messages"]
    assert len(at_hub) == 3, "the stored notifications sit above an unacked chat: nothing acked"
    run_json("ack", env=env)
    assert hub.poll("alice", alice)["messages"] == []


# guarantee 5: seq regression ------------------------------------------------------------


def test_hub_restart_after_everything_was_acked(duo):
    """Guarantee 5: after a restart the hub's counter restarts below our cursor; new
    messages are still all delivered, once, with a warning. Fails with a since=cursor poll."""
    hub, env, alice, bob = duo
    post(hub, bob, "alice", 5)
    assert len(run_json("check", env=env)["messages"]) == 5
    run_json("ack", env=env)
    hub.restart()
    new = post(hub, bob, "alice", 3)
    result = run_json("check", env=env)
    assert [m["id"] for m in result["messages"]] == new
    assert [m["seq"] for m in result["messages"]] == [1, 2, 3]
    assert any("went backwards" in w for w in result["warnings"])
    assert run_json("check", env=env)["messages"] == []


# guarantee 1: crash safety ---------------------------------------------------------------


def test_kill_9_at_random_moments_loses_nothing_and_answers_no_ping_twice(hub_factory, tmp_path):
    """Guarantee 1: kill -9 of `agentcom check` (and now and then `agentcom ack`) at random
    instants, 50 rounds over mixed traffic: every state file loads, every attention message
    is returned at least once, no ping is answered twice. Fails without the atomic write,
    the write-ahead save, and acks finishing only messages whose output was printed."""
    hub = hub_factory("--mailbox-cap", "2000")
    header, lines = load_trace()
    agent = header["agent"]
    tokens = {name: hub.mint(name) for name in [agent, *header["peers"]]}
    write_config(
        tmp_path,
        agent,
        capabilities=header["capabilities"],
        ignore_from=header["ignore_from"],
        lease_seconds=1,
        max_deliveries=1000,
    )
    env = agent_env(hub, agent, tokens[agent], tmp_path)
    rng = random.Random(4)
    attention, returned = set(), set()
    chunk = len(lines) // 50 + 1
    for round_no in range(50):
        for line in lines[round_no * chunk : (round_no + 1) * chunk]:
            body = {k: line[k] for k in ("to", "type", "payload", "reply_to") if line.get(k) is not None}
            msg_id = hub.post(tokens[line["from"]], body).json()["id"]
            if line["expect"] == "attention":
                attention.add(msg_id)
        command = "ack" if round_no % 3 == 2 else "check"  # kill acks too, now and then
        polls = hub.log_path.read_bytes().count(b"GET /api/mailbox/")
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentcom_skill", command, "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Past interpreter start-up, whatever the load: the run's poll has reached the hub.
        # From there the kill lands anywhere in the critical section (decide, commit, send,
        # ack the hub, print, confirm) or just after it.
        deadline = time.monotonic() + 60
        while (
            hub.log_path.read_bytes().count(b"GET /api/mailbox/") == polls
            and proc.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.08))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        assert b"Traceback" not in err
        if command == "check":
            try:  # a run killed after printing did deliver: what counts is complete output
                returned |= {m["id"] for m in json.loads(out)["messages"]}
            except ValueError:
                pass
        if round_no % 10 == 9:
            result = run_json("check", env=env)  # a normal run now and then
            assert not any("corrupt" in w for w in result["warnings"]), result["warnings"]
            returned |= {m["id"] for m in result["messages"]}
    time.sleep(1.2)  # past every lease: only a lower bound on time matters here
    final = run_json("check", env=env)
    assert not any("corrupt" in w for w in final["warnings"])
    returned |= {m["id"] for m in final["messages"]}
    assert attention <= returned
    assert not list((tmp_path / "state").rglob("*.corrupt-*"))
    replies = Counter()
    for peer in header["peers"]:
        for m in hub.poll(peer, tokens[peer])["messages"]:
            if m["from"] == agent:
                replies[m["reply_to"]] += 1
    assert replies and max(replies.values()) == 1


def test_corrupt_store_is_moved_aside_and_recovered_from_the_hub(duo, tmp_path):
    """Guarantee 1: a corrupt message store is moved aside with a warning naming both paths;
    the skill recovers from the hub and attention messages come back as redelivered."""
    hub, env, alice, bob = duo
    ids = post(hub, bob, "alice", 2)
    run_json("check", env=env)
    (path,) = (tmp_path / "state").rglob("messages.sqlite3")
    for garbage in (b"not a database at all" * 300, b"SQLite format 3\x00" + b"\xff" * 5000):
        for extra in path.parent.glob("messages.sqlite3-*"):
            extra.unlink()
        path.write_bytes(garbage)
        result = run_json("check", env=env)
        assert [m["id"] for m in result["messages"]] == ids
        assert all(m["redelivered"] for m in result["messages"])
        (warning,) = [w for w in result["warnings"] if "corrupt" in w]
        assert str(path) in warning and "messages.sqlite3.corrupt-" in warning
        assert run_json("check", env=env)["messages"] == []
    assert len(list(path.parent.glob("messages.sqlite3.corrupt-*[0-9]"))) == 2


DAMAGE = {
    "body not JSON": "UPDATE messages SET body = '{' WHERE id = ?",
    "body a list": "UPDATE messages SET body = '[]' WHERE id = ?",
    "due not a time": "UPDATE messages SET due = 'x' WHERE id = ?",
    "text not UTF-8": "UPDATE messages SET text = CAST(X'6869ff' AS TEXT) WHERE id = ?",
    "state unknown": "UPDATE messages SET state = 'weird', deliveries = 'many' WHERE id = ?",
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_row_is_repaired_or_set_aside_and_everything_else_works(duo, tmp_path, damage):
    """Issue 19.4: one bad cell in the store must not make every command fail. A row whose
    body is intact is repaired (the message comes back); one whose body cannot be read is set
    aside for a person, reported once, and taken again from the hub, which still holds it."""
    import sqlite3

    hub, env, alice, bob = duo
    victim, other = post(hub, bob, "alice", 2)
    assert {m["id"] for m in run_json("check", env=env)["messages"]} == {victim, other}
    (path,) = (tmp_path / "state").rglob("messages.sqlite3")
    with sqlite3.connect(path) as db:
        db.execute(DAMAGE[damage], (victim,))
    third = post(hub, bob, "alice", 1)[0]
    said = []
    for command in (["inbox"], ["show", other], ["search", "m1"], ["thread", other], ["log"], ["status"]):
        out = run_cli(*command, "--json", env=env)
        assert out.returncode == 0 and "Traceback" not in out.stderr, (command, out.stderr)
        said += [w for w in json.loads(out.stdout).get("warnings", []) if "damaged" in w]
    assert len(said) == 1 and victim in said[0], ("reported by the first command that read it", said)
    result = run_json("check", env=env)
    assert third in {m["id"] for m in result["messages"]}
    with sqlite3.connect(path) as db:
        aside = db.execute("SELECT key, kind, raw FROM set_aside").fetchall()
        (text,) = db.execute("SELECT text FROM messages WHERE id = ?", (victim,)).fetchone() or (None,)
    if damage.startswith("body"):
        assert [(k, kind) for k, kind, _ in aside] == [(victim, "damaged")] and aside[0][2]
        assert victim in {m["id"] for m in result["messages"]}, "taken again from the hub"
    else:
        assert aside == [] and text == "m0", "repaired from the body"
    everything = [run_cli(*c, "--json", env=env) for c in (["check"], ["inbox"], ["status"])]
    assert all(o.returncode == 0 for o in everything)
    assert not any("damaged" in w for o in everything for w in json.loads(o.stdout).get("warnings", [])), (
        "reported once"
    )


def test_wait_brings_the_warnings_of_its_empty_looks_with_what_it_finds(duo, tmp_path):
    """Found by a hostile pass: a warning of one of wait's looks that found nothing was never
    reported (it went with the empty result). (The look's warning here: a message an older
    release kept without its text is gone from the hub. A look reads only the rows it may
    deliver, so a damaged row deferred for an hour is no longer what makes it warn.)"""
    import sqlite3

    from agentcom_skill.actions.check import wait
    from agentcom_skill.config import load_settings

    hub, env, alice, bob = duo
    kept = "f" * 16
    run_json("check", env=env)
    (path,) = (tmp_path / "state").rglob("messages.sqlite3")
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO messages (id, seq, sender, type, text, disposition, state, via, received_at)"
            " VALUES (?, 4242, 'bob', 'chat', 'old', 'attention', 'pending', 'import', 1.0)",
            (kept,),
        )
    later: list[str] = []

    def sleep(seconds: float) -> None:  # the first look found nothing: a message arrives meanwhile
        if not later:
            later.extend(post(hub, bob, "alice", 1))

    s = load_settings({}, env=env)
    result = wait(timeout=600, settings=s, sleep=sleep)
    assert result is not None and [m["id"] for m in result["messages"]] == later
    assert any("seq 4242 was kept by an older agentcom" in w for w in result["warnings"]), result["warnings"]


def test_a_store_whose_schema_is_not_ours_is_moved_aside_and_rebuilt(duo, tmp_path):
    """Issue 19.4: a renamed column is a store this version cannot use: moved aside like a
    corrupt file, rebuilt from the hub."""
    import sqlite3

    hub, env, alice, bob = duo
    ids = post(hub, bob, "alice", 2)
    run_json("check", env=env)
    (path,) = (tmp_path / "state").rglob("messages.sqlite3")
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE messages RENAME COLUMN body TO corpse")
    result = run_json("check", env=env)
    assert sorted(m["id"] for m in result["messages"]) == sorted(ids) and all(
        m["redelivered"] for m in result["messages"]
    )
    assert any("moved it to" in w for w in result["warnings"])
    assert run_cli("inbox", env=env).returncode == 0


def test_state_files_are_never_opened_through_a_symbolic_link(duo, tmp_path):
    """Issue 19.5: a dangling messages.sqlite3 link in the state folder used to make agentcom
    create the store where it pointed (mode 0644). Refused, exit 6, nothing created; and a
    state folder others may write is warned about."""
    hub, env, alice, bob = duo
    post(hub, bob, "alice", 1)
    run_json("check", env=env)
    (folder,) = {p.parent for p in (tmp_path / "state").rglob("messages.sqlite3")}
    target = tmp_path / "elsewhere" / "planted.sqlite3"
    target.parent.mkdir()
    for name in ("messages.sqlite3", "messages.sqlite3-wal"):
        moved = folder / f"{name}.real"
        if (folder / name).exists():
            (folder / name).rename(moved)
        (folder / name).symlink_to(target)
        out = run_cli("check", env=env)
        assert out.returncode == 6 and "symbolic link" in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert not target.exists()
        (folder / name).unlink()
        if moved.exists():
            moved.rename(folder / name)
    (folder / "watch.lock").symlink_to(target)
    out = run_cli("watch", env=env, timeout=60)
    assert out.returncode == 6 and not target.exists(), out.stderr
    (folder / "watch.lock").unlink()
    # the agent's own folder a link to a folder elsewhere: refused too, nothing created there
    real, elsewhere = folder.with_name(folder.name + ".real"), tmp_path / "elsewhere-folder"
    elsewhere.mkdir()
    folder.rename(real)
    folder.symlink_to(elsewhere)
    for command in (["check"], ["watch"]):
        out = run_cli(*command, env=env, timeout=60)
        assert out.returncode == 6 and "symbolic link" in out.stderr, (command, out.stderr)
        assert list(elsewhere.iterdir()) == [], command
    folder.unlink()
    real.rename(folder)
    folder.chmod(0o777)
    try:
        assert any("writable by others" in w for w in run_json("check", env=env)["warnings"])
    finally:
        folder.chmod(0o700)


def test_unusable_state_dir_is_exit_6_and_sends_nothing(duo, tmp_path):
    """Guarantee 1 / exit 6: a state folder that cannot be written gives exit 6, one line,
    and no pong goes out (the write-ahead save comes first)."""
    hub, env, alice, bob = duo
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    post(hub, bob, "alice", 1, action="ping")
    out = run_cli("check", env={**env, "AGENTCOM_STATE_DIR": str(blocker / "state")})
    assert out.returncode == 6 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert hub.poll("bob", bob)["messages"] == []
    assert len(hub.poll("alice", alice)["messages"]) == 1


def test_state_file_is_private(duo, tmp_path):
    """Guarantee 9: files written by the skill are mode 0600."""
    hub, env, alice, bob = duo
    post(hub, bob, "alice", 1)
    run_json("check", env=env)
    files = list((tmp_path / "state").rglob("messages.sqlite3*"))
    assert files
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


# guarantee 3: concurrency ----------------------------------------------------------------


def test_busy_store_is_exit_7_not_a_hang(duo, tmp_path):
    """Guarantee 3: a run with work to do that cannot start its transaction within
    lock_timeout exits 7 (saying what it waited for); an idle check needs no write at all."""
    import sqlite3

    hub, env, alice, bob = duo
    write_config(tmp_path, "alice", lock_timeout=1.5)
    run_json("check", env=env)
    (path,) = (tmp_path / "state").rglob("messages.sqlite3")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        assert run_cli("check", env=env).returncode == 0, "an idle check needs no write"
        post(hub, bob, "alice", 1)
        out = run_cli("check", env=env)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert out.returncode == 7 and "another agentcom run" in out.stderr
    assert "waiting up to" in out.stderr, "a wait over a second says what it waits for"
    assert len(run_json("check", env=env)["messages"]) == 1


def test_eight_concurrent_checks_return_each_message_exactly_once(duo, tmp_path):
    """Guarantee 3: 8 checks started at once on 200 attention messages return each once, together."""
    hub, env, alice, bob = duo
    write_config(tmp_path, "alice", mailbox_cap=1000)
    hub.args = ["--mailbox-cap", "1000"]
    hub.restart()
    ids = post(hub, bob, "alice", 200)
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda _: run_cli("check", "--json", env=env), range(8)))
    assert all(o.returncode == 0 for o in outs), [o.stderr for o in outs]
    returned = [m["id"] for o in outs for m in json.loads(o.stdout)["messages"]]
    assert sorted(returned) == sorted(ids)


# guarantee 7: hazards ----------------------------------------------------------------------


def test_mailbox_near_the_cap_is_reported(duo):
    """Guarantee 7: a mailbox at 80% of the hub's cap gives a warning in check and status."""
    hub, env, alice, bob = duo
    post(hub, bob, "alice", 1)  # an unacked chat first: the notifications above it stay at the hub
    post(hub, bob, "alice", 79, action="notify")
    result = run_json("check", env=env)
    assert any("80%" in w and "cap of 100" in w for w in result["warnings"]), result["warnings"]
    assert any("near the hub's cap" in h for h in run_json("status", env=env)["hazards"])
    cron = run_cli("check", "--cron", env=env)
    assert cron.stdout == "NO_REPLY\n" and "cap of 100" in cron.stderr, "hazards reach the cron log"
    run_json("ack", env=env)
    assert not any("cap" in w for w in run_json("check", env=env)["warnings"])


def test_being_connected_by_websocket_is_reported(duo):
    """Guarantee 7: this agent listed in /api/agents (direct messages bypass the mailbox) is a warning."""
    hub, env, alice, bob = duo
    proxy = FaultProxy(hub.url)
    try:
        proxy.arm("connected", path_prefix="/api/agents")
        result = run_json("check", env={**env, "AGENTCOM_HUB_URL": proxy.url})
        assert any("connected to the hub by WebSocket" in w for w in result["warnings"])
        status = run_json("status", env={**env, "AGENTCOM_HUB_URL": proxy.url})
        assert any("WebSocket" in h for h in status["hazards"])
    finally:
        proxy.close()


def test_full_disk_is_exit_6_and_leaves_state_and_hub_untouched(duo, tmp_path):
    """Guarantee 1 / exit 6: a state write that fails (file size limit standing in for a full
    disk) gives exit 6, keeps the old state file whole, and sends no pong."""
    import resource

    hub, env, alice, bob = duo
    post(hub, bob, "alice", 1)
    run_json("check", env=env)
    before = state_files(tmp_path)
    post(hub, bob, "alice", 40)
    post(hub, bob, "alice", 1, action="ping")
    limit = 1  # no room at all: nothing can be written past the first byte of any file

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = subprocess.run(
        [sys.executable, "-m", "agentcom_skill", "check"],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=small_files,
    )
    assert out.returncode == 6, out.stderr
    assert "Traceback" not in out.stderr and "cannot use the message store" in out.stderr
    assert state_files(tmp_path) == before
    assert hub.poll("bob", bob)["messages"] == []
    assert len(run_json("check", env=env)["messages"]) == 40
