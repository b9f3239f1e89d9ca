"""The CLI, the watch and the A2A bridge against the real AgentCom hub (Elixir) at REALHUB_URL.

Skipped when REALHUB_URL is unset (CI has no real hub). Run them against a hub of your own:
the trace's broadcasts reach every agent registered there. Agent ids are fresh for each
session (tests/realhub.py). Waits poll for an outcome with generous deadlines.
"""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from a2a_standin import A2AStandIn, Outcome
from conftest import agent_env, load_trace, run_cli, run_json
from hubprocess import eventually
from test_watch import WatchProcess

pytestmark = pytest.mark.realhub


@pytest.fixture(autouse=True)
def revoke_after(realhub):
    yield
    realhub.revoke_minted()


def kept(tmp_path: Path) -> set[str]:
    """The ids in the agent's local store."""
    db = next((tmp_path / "state").glob("*/messages.sqlite3"))
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM messages")}


def test_doctor_passes(realhub, tmp_path):
    alice = realhub.agent("alice")
    env = agent_env(realhub, alice, realhub.mint(alice), tmp_path)
    out = run_cli("doctor", "--json", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    found = {c["check"]: c["outcome"] for c in json.loads(out.stdout)["checks"]}
    assert [found[c] for c in ("config", "hub", "token", "store")] == ["ok"] * 4, found


def test_send_check_reply_ack_and_agents(realhub, tmp_path):
    from websockets.sync.client import connect

    alice, bob = realhub.agent("alice"), realhub.agent("bob")
    tokens = {alice: realhub.mint(alice), bob: realhub.mint(bob)}
    a_env = agent_env(realhub, alice, tokens[alice], tmp_path / "a")
    b_env = agent_env(realhub, bob, tokens[bob], tmp_path / "b")

    sent = run_json("send", alice, "please review PR 7", env=b_env)
    got = run_json("check", env=a_env)["messages"]
    assert [(m["id"], m["from"], m["text"]) for m in got] == [(sent["id"], bob, "please review PR 7")]

    replied = run_json("reply", sent["id"], "looks good", env=a_env)
    answer = run_json("check", env=b_env)["messages"]
    assert [(m["id"], m["reply_to"], m["text"], m["type"]) for m in answer] == [
        (replied["id"], sent["id"], "looks good", "response")
    ]

    assert [m["id"] for m in run_json("ack", env=a_env)["acked"]] == [sent["id"]]
    eventually(lambda: realhub.poll(alice, tokens[alice])["messages"] == [], "the ack empties alice's mailbox")
    assert run_json("check", env=a_env)["messages"] == []

    with connect(realhub.url.replace("http", "ws", 1) + "/ws") as ws:
        ws.send(json.dumps({"type": "identify", "agent_id": alice, "token": tokens[alice], "name": "Alice"}))
        assert json.loads(ws.recv(timeout=30))["type"] == "identified"
        listed = {a["agent_id"]: a for a in run_json("agents", env=b_env)["agents"]}
        assert listed[alice]["name"] == "Alice"


@pytest.fixture
def watch_rig(realhub, tmp_path):
    """alice runs `agentcom watch` (no wake: messages wait in its store); bob sends."""
    alice, bob = realhub.agent("alice"), realhub.agent("bob")
    tokens = {alice: realhub.mint(alice), bob: realhub.mint(bob, exempt=True)}
    env = agent_env(realhub, alice, tokens[alice], tmp_path)
    watches: list[WatchProcess] = []

    def start() -> WatchProcess:
        w = WatchProcess(env, tmp_path)
        watches.append(w)
        w.wait_for("connected")
        eventually(lambda: alice in realhub.connected(), "the hub lists the watch")
        return w

    def post(text: str, **body) -> str:
        r = realhub.post(tokens[bob], {"to": alice, "payload": {"text": text}, **body})
        assert r.status_code == 200, r.text
        return r.json()["id"]

    yield alice, bob, tokens, env, start, post
    for w in watches:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


def test_watch_answers_a_ping_by_code_stores_pushes_and_drains_after_kill_9(realhub, watch_rig, tmp_path):
    alice, bob, tokens, env, start, post = watch_rig
    w = start()
    ping = post("", type="ping")
    pong = eventually(
        lambda: [m for m in realhub.poll(bob, tokens[bob])["messages"] if m["reply_to"] == ping], "the pong at bob's"
    )
    assert pong[0]["from"] == alice and pong[0]["payload"]["action"] == "pong"
    pushed = post("pushed while connected")
    eventually(lambda: pushed in kept(tmp_path), "the pushed message stored")
    assert realhub.poll(alice, tokens[alice])["messages"] == [], "a pushed message is in no mailbox"

    w.proc.kill()
    w.proc.wait()
    eventually(lambda: alice not in realhub.connected(), "the hub saw the socket close")
    waiting = [post(f"while down {n}") for n in range(3)]
    at_hub = [m["id"] for m in realhub.poll(alice, tokens[alice])["messages"]]
    assert at_hub == waiting
    start()
    eventually(lambda: set(waiting) <= kept(tmp_path), "the restarted watch drains the mailbox")
    got = [m["id"] for m in run_json("check", env=env)["messages"]]
    assert sorted(got) == sorted([pushed, *waiting])


def test_watch_keeps_a_burst_of_150_whole(realhub, watch_rig, tmp_path):
    alice, bob, tokens, env, start, post = watch_rig
    w = start()
    with ThreadPoolExecutor(3) as pool:
        sent = list(pool.map(lambda n: post(f"burst {n}"), range(150)))
    assert len(set(sent)) == 150
    eventually(lambda: set(sent) <= kept(tmp_path), "all 150 stored by the watch", deadline=90)
    assert realhub.poll(alice, tokens[alice])["messages"] == []
    assert w.stop() == 0


def test_a2a_answer_reaches_the_sender(realhub, watch_rig, tmp_path):
    alice, bob, tokens, env, start, post = watch_rig
    standin = A2AStandIn(answer=lambda text, ctx: Outcome(text="Done: " + ("yes" if "ship it?" in text else "?")))
    try:
        table = {"mode": "a2a", "url": standin.url, "token": standin.token, "window": 0.2}
        (tmp_path / f"{alice}.toml").write_text(
            "[wake]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
        )
        w = start()
        msg = post("ship it?")
        got = eventually(
            lambda: [m for m in realhub.poll(bob, tokens[bob])["messages"] if m["type"] == "response"],
            "the answer at bob's",
        )
        assert [(a["reply_to"], a["from"], a["payload"]["text"]) for a in got] == [(msg, alice, "Done: yes")]
        eventually(lambda: "a2a_answered" in w.kinds(), "the watch reports the answer")
        assert len([m for m in realhub.poll(bob, tokens[bob])["messages"] if m["type"] == "response"]) == 1
        assert standin.violations == []
        assert w.stop() == 0
    finally:
        standin.close()


def test_the_labelled_trace_through_the_real_hub(realhub, tmp_path):
    """The labelled day (tests/data) posted through the real hub, in rounds that fit its
    100-message mailbox: `check` returns exactly the messages labelled attention, and `ack`
    empties the hub's mailbox. Its 149 broadcasts take the real hub about 30 ms per token it
    knows each (protocol.md 1.8): ~20 s on a hub holding only this test's tokens, minutes on
    one holding hundreds."""
    header, lines = load_trace()
    names = {name: realhub.agent(name) for name in [header["agent"], *header["peers"]]}
    agent = names[header["agent"]]
    tokens = {name: realhub.mint(full, exempt=full != agent) for name, full in names.items()}
    config = tmp_path / f"{agent}.toml"
    config.write_text(
        f"capabilities = {json.dumps(list(header['capabilities']))}\n"
        f"ignore_from = {json.dumps([names[n] for n in header['ignore_from']])}\n"
        'status = "reviewing"\n'
    )
    env = agent_env(realhub, agent, tokens[header["agent"]], tmp_path)
    expected, returned = set(), []
    for start in range(0, len(lines), 100):
        for line in lines[start : start + 100]:
            body = {k: line[k] for k in ("type", "payload", "reply_to") if line.get(k) is not None}
            if line.get("to") is not None:
                body["to"] = names.get(line["to"], line["to"])
            r = realhub.post(tokens[line["from"]], body)
            assert r.status_code == 200, r.text
            if line["expect"] == "attention":
                expected.add(r.json()["id"])
        returned += [m["id"] for m in run_json("check", env=env)["messages"]]
        run_json("ack", env=env)
        eventually(lambda: realhub.poll(agent, tokens[header["agent"]])["messages"] == [], "ack empties the hub")
    assert len(returned) == len(set(returned))
    assert set(returned) == expected
    assert len(expected) == sum(1 for line in lines if line["expect"] == "attention")


# issue 32 on the real hub ------------------------------------------------------------------


def test_a_pushed_task_is_declined_and_a_pushed_broadcast_kept_as_a_broadcast(realhub, watch_rig, tmp_path):
    """The hub's scheduler sends the watch tasks: each is kept as a notice and declined at once
    (never left assigned, never flagged unresponsive). A pushed broadcast (its frame has no
    `to`) is kept as a broadcast, a pushed direct message as direct."""
    alice, bob, tokens, env, start, post = watch_rig
    w = start()
    auth = {"Authorization": f"Bearer {tokens[bob]}"}
    pushed = realhub.http.post(
        realhub.url + "/api/admin/push-task", json={"agent_id": alice, "description": "build it"}, headers=auth
    )
    assert pushed.status_code == 200, pushed.text
    task_id = pushed.json()["task_id"]

    def state() -> dict:
        return realhub.http.get(f"{realhub.url}/api/agents/{alice}/state", headers=auth, timeout=10).json()

    eventually(lambda: [e for e in w.events() if e["event"] == "task"], "the task declined", deadline=20)
    eventually(lambda: state().get("fsm_state") == "idle" and not state().get("current_task_id"), "alice idle again")
    assert "unresponsive" not in state().get("flags", [])
    notes = [m for m in run_json("log", "--json", env=env)["entries"] if m["type"] == "task_assign"]
    assert notes and task_id in notes[0]["text"]

    everyone = realhub.post(tokens[bob], {"payload": {"text": "to everyone"}}).json()["id"]
    direct = post("just you")
    eventually(lambda: {everyone, direct} <= kept(tmp_path), "both pushed messages stored")
    shown = {m["id"]: m for m in run_json("inbox", "--json", env=env)["messages"]}
    assert (shown[everyone]["broadcast"], shown[direct]["broadcast"]) == (True, False)


def test_a_token_reset_is_noticed_by_check_within_30_s(realhub, watch_rig, tmp_path):
    alice, bob, tokens, env, start, post = watch_rig
    start()
    auth = {"Authorization": f"Bearer {tokens[bob]}"}
    reset = realhub.http.post(f"{realhub.url}/api/admin/agents/{alice}/reset-token", headers=auth, timeout=10)
    assert reset.status_code == 201, reset.text
    eventually(
        lambda: [h for h in run_json("check", env=env)["warnings"] if "refuses this agent's token" in h],
        "check says the token is refused",
        deadline=30,
    )


def test_large_non_ascii_text_is_sent_and_a_numeric_text_shown(realhub, tmp_path):
    alice, bob = realhub.agent("alice"), realhub.agent("bob")
    a_env = agent_env(realhub, alice, realhub.mint(alice), tmp_path / "a")
    b_env = agent_env(realhub, bob, realhub.mint(bob), tmp_path / "b")
    text_file = tmp_path / "big.txt"
    text_file.write_text("é" * 2_800_000)
    sent = run_json("send", alice, "--text-file", str(text_file), env=b_env)
    assert sent["confirmed"] is True
    realhub.post(realhub.mint(bob), {"to": alice, "payload": {"text": 42}})
    got = {m["id"]: m for m in run_json("check", env=a_env)["messages"]}
    assert len(got[sent["id"]]["text"]) == 2_800_000
    assert "42" in [m["text"] for m in got.values()]
