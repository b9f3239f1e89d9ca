"""The labelled day of traffic through a real hub and the real CLI: exactly the attention lines come back."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from conftest import agent_env, load_trace, run_cli, run_json


@pytest.fixture
def loaded_trace(hub_factory, tmp_path):
    hub = hub_factory("--mailbox-cap", "2000")
    header, lines = load_trace()
    agent = header["agent"]
    tokens = {name: hub.mint(name) for name in [agent, *header["peers"]]}
    posted = []
    for line in lines:
        body = {k: line[k] for k in ("to", "type", "payload", "reply_to") if line.get(k) is not None}
        r = hub.post(tokens[line["from"]], body)
        assert r.status_code == 200, r.text
        posted.append({**line, "id": r.json()["id"]})
    config = tmp_path / f"{agent}.toml"
    config.write_text(
        f"capabilities = {json.dumps(list(header['capabilities']))}\n"
        f"ignore_from = {json.dumps(list(header['ignore_from']))}\n"
        'status = "reviewing"\n'
        "check_max = 10000\n"  # every attention line of the day in one check
    )
    env = agent_env(hub, agent, tokens[agent], tmp_path)
    return hub, header, posted, tokens, env


def test_check_returns_exactly_the_attention_lines_and_answers_once_per_sender(loaded_trace):
    hub, header, posted, tokens, env = loaded_trace
    agent = header["agent"]
    result = run_json("check", env=env)

    expected = {p["id"] for p in posted if p["expect"] == "attention"}
    returned = [m["id"] for m in result["messages"]]
    assert len(returned) == len(set(returned))
    assert set(returned) == expected
    counts = defaultdict(int)
    for p in posted:
        counts[p["expect"]] += 1
    assert result["handled"] == {"auto_reply": counts["auto_reply"], "store": counts["store"], "drop": counts["drop"]}
    assert result["pending"] == 0

    # every message the agent sent, as its peers see it
    newest = {}
    for p in posted:
        if p["expect"] == "auto_reply":
            newest[(p["from"], "pong" if p["why"] == "ping" else "status_reply")] = p["id"]
    sent = []
    for peer in header["peers"]:
        for m in hub.poll(peer, tokens[peer])["messages"]:
            if m["from"] == agent:
                sent.append(m)
    got = {(m["to"], m["payload"]["action"]): m["reply_to"] for m in sent}
    assert len(sent) == len(newest), "one reply per sender and kind, nothing else"
    assert got == newest
    for m in sent:
        assert m["type"] == "response" and m["payload"]["status"] == "reviewing"
        if m["payload"]["action"] == "status_reply":
            assert m["payload"]["capabilities"] == header["capabilities"]

    ack = run_json("ack", env=env)
    assert len(ack["acked"]) == len(expected)
    again = run_json("check", env=env)
    assert again["messages"] == [] and again["handled"] == {"auto_reply": 0, "store": 0, "drop": 0}
    assert hub.poll(agent, tokens[agent])["messages"] == []


def test_priority_order_on_the_trace(loaded_trace):
    hub, header, posted, tokens, env = loaded_trace
    msgs = run_json("check", env=env)["messages"]
    ranks = [({"urgent": 0, "high": 1}.get(m["priority"], 2), m["broadcast"]) for m in msgs]
    assert ranks == sorted(ranks)
    for a, b in zip(msgs, msgs[1:], strict=False):
        if (a["priority"], a["broadcast"]) == (b["priority"], b["broadcast"]):
            assert a["seq"] < b["seq"]


def test_max_keeps_the_rest_pending_and_peek_changes_nothing(loaded_trace):
    hub, header, posted, tokens, env = loaded_trace
    peek = run_json("check", "--peek", env=env)
    assert len(peek["messages"]) > 10
    peek_again = run_json("check", "--peek", env=env)
    assert [m["id"] for m in peek_again["messages"]] == [m["id"] for m in peek["messages"]]
    assert all(m["from"] != header["agent"] for p in header["peers"] for m in hub.poll(p, tokens[p])["messages"])

    first = run_json("check", "--limit", "5", env=env)
    assert [m["id"] for m in first["messages"]] == [m["id"] for m in peek["messages"][:5]]
    assert first["pending"] == len(peek["messages"]) - 5
    rest = run_json("check", env=env)
    assert [m["id"] for m in rest["messages"]] == [m["id"] for m in peek["messages"][5:]]
    assert rest["handled"] == {"auto_reply": 0, "store": 0, "drop": 0}


def test_log_shows_what_tier0_handled_and_the_roster(loaded_trace):
    hub, header, posted, tokens, env = loaded_trace
    run_json("check", env=env)
    stored = run_json("log", "--disposition", "store", "--limit", "1000", env=env)
    assert len(stored["entries"]) == sum(1 for p in posted if p["expect"] == "store")
    assert {e["disposition"] for e in stored["entries"]} == {"store"}
    presence = [p for p in posted if p["why"] == "presence update"]
    last = {}
    for p in presence:
        last[p["from"]] = p["payload"]["status"]
    assert {k: v["status"] for k, v in stored["roster"].items()} == last
    text = run_cli("log", "--limit", "3", env=env)
    assert text.returncode == 0 and "Peers' latest statuses:" in text.stdout


def test_cron_mode_and_exit_code(loaded_trace):
    hub, header, posted, tokens, env = loaded_trace
    out = run_cli("check", "--cron", "--exit-code", env=env)
    assert out.returncode == 1
    assert out.stdout.startswith("[AgentCom] ")
    run_json("ack", env=env)
    quiet = run_cli("check", "--cron", env=env)
    assert quiet.returncode == 0 and quiet.stdout == "NO_REPLY\n"
