"""Contract tests: `agentcom hub serve` in a subprocess, spoken to over HTTP like the real hub."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

HEX16 = re.compile(r"^[0-9a-f]{16}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def test_health_and_agents(hub):
    assert requests.get(hub.url + "/health").json() == {"status": "ok", "service": "agent_com", "agents_connected": 0}
    assert requests.get(hub.url + "/api/agents").json() == {"agents": []}


def test_keys_are_sorted_and_a_broadcast_is_stored_once_per_token(hub):
    """Issue 25.5, as the real hub does: JSON keys come sorted (payloads too); a broadcast is
    stored once per token the recipient holds (same id, one seq each), and the client keeps
    it once."""
    from conftest import agent_env, run_json

    alice, bob = hub.mint("alice"), hub.mint("bob")
    hub.mint("alice")  # a second token for alice
    hub.post(bob, {"to": "broadcast", "payload": {"z": 1, "a": {"y": 1, "b": 2}, "text": "all"}}).raise_for_status()
    raw = requests.get(f"{hub.url}/api/mailbox/alice", headers=auth(alice), timeout=10).content
    assert raw.startswith(b'{"agent_id":"alice","count":2,"last_seq":')
    assert b'"payload":{"a":{"b":2,"y":1},"text":"all","z":1}' in raw
    copies = json.loads(raw)["messages"]
    assert len({m["id"] for m in copies}) == 1 and len({m["seq"] for m in copies}) == 2
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        got = run_json("check", env=agent_env(hub, "alice", alice, Path(tmp)))["messages"]
    assert [m["id"] for m in got] == [copies[0]["id"]]


def test_replies_carry_text_as_utf8_as_the_real_hub_does_and_escape_only_a_lone_surrogate(hub):
    """The real hub (Jason) writes non-ASCII text as it is: a reply is no larger than what was
    posted. A lone surrogate, which UTF-8 cannot carry, is the one thing escaped."""
    alice, bob = hub.mint("alice"), hub.mint("bob")
    hub.post(bob, {"to": "alice", "payload": {"text": "caf\u00e9 \u2603"}}).raise_for_status()
    headers = {"Authorization": f"Bearer {alice}"}
    raw = requests.get(f"{hub.url}/api/mailbox/alice", headers=headers, timeout=10).content
    assert "café ☃".encode() in raw and b"\\u00e9" not in raw
    lone = '{"to":"alice","payload":{"text":"x\\ud800 caf\u00e9"}}'.encode()
    headers_bob = {"Authorization": f"Bearer {bob}", "content-type": "application/json"}
    requests.post(hub.url + "/api/message", data=lone, headers=headers_bob, timeout=10).raise_for_status()
    raw = requests.get(f"{hub.url}/api/mailbox/alice", headers=headers, timeout=10).content
    assert b"\\ud800" in raw and json.loads(raw)["messages"][-1]["payload"]["text"] == "x\ud800 caf\u00e9"


def test_hub_token_cli_prints_only_a_64_hex_token(hub):
    assert HEX64.match(hub.mint("alice"))


def test_hub_database_holding_the_tokens_is_private(hub):
    import stat

    hub.mint("alice")
    files = list(hub.db.parent.glob(hub.db.name + "*"))
    assert hub.db in files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_register_created_conflict_and_validation(hub):
    r = requests.post(hub.url + "/api/onboard/register", json={"agent_id": "newbie"})
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"agent_id", "token", "hub_api_url", "hub_ws_url", "default_repo"}
    assert body["agent_id"] == "newbie" and HEX64.match(body["token"])
    # the minted token works at once
    assert hub.poll("newbie", body["token"])["messages"] == []
    again = requests.post(hub.url + "/api/onboard/register", json={"agent_id": "newbie"})
    assert again.status_code == 409 and again.json() == {"error": "agent_id already registered"}
    for bad in ({}, {"agent_id": ""}, {"agent_id": 5}):
        assert requests.post(hub.url + "/api/onboard/register", json=bad).status_code == 422


def test_admin_tokens_needs_a_valid_token(hub):
    alice = hub.mint("alice")
    r = requests.post(hub.url + "/admin/tokens", json={"agent_id": "carol"}, headers=auth(alice))
    assert r.status_code == 201 and r.json()["agent_id"] == "carol" and HEX64.match(r.json()["token"])
    assert requests.post(hub.url + "/admin/tokens", json={"agent_id": "carol"}).status_code == 401
    unknown = requests.post(hub.url + "/admin/tokens", json={"agent_id": "carol"}, headers=auth("f" * 64))
    assert unknown.status_code == 401


def test_post_message_and_its_errors(hub):
    alice = hub.mint("alice")
    hub.mint("bob")
    r = hub.post(alice, {"to": "bob", "payload": {"text": "hi"}})
    assert r.status_code == 200 and r.json()["status"] == "sent" and HEX16.match(r.json()["id"])
    unauthorized = hub.post("0" * 64, {"to": "bob", "payload": {}})
    assert unauthorized.status_code == 401
    assert unauthorized.json()["error"] == "unauthorized" and "hint" in unauthorized.json()
    for bad, field in (
        ({"to": "bob"}, "payload"),
        ({"to": "bob", "payload": "text"}, "payload"),
        ({"to": "bob", "payload": [1]}, "payload"),
        ({"to": 5, "payload": {}}, "to"),
        ({"to": "bob", "type": 3, "payload": {}}, "type"),
        ({"to": "bob", "reply_to": {}, "payload": {}}, "reply_to"),
    ):
        r = hub.post(alice, bad)
        assert r.status_code == 422, bad
        assert r.json()["error"] == "validation_failed"
        (error,) = r.json()["errors"]
        assert error["field"] == field and error["error"] in ("required", "wrong_type") and error["detail"]
    assert hub.post(alice, {"to": "bob", "type": 3, "payload": {}}).json()["errors"] == [
        {"field": "type", "error": "wrong_type", "detail": "expected string, got integer", "value": 3}
    ]
    assert hub.post(alice, {"to": "bob"}).json()["errors"] == [
        {"field": "payload", "error": "required", "detail": "field is required"}
    ]
    json_type = {**auth(alice), "content-type": "application/json"}
    not_json = requests.post(hub.url + "/api/message", data=b"{nope", headers=json_type)
    assert not_json.status_code == 400 and not_json.content == b""
    text_type = {**auth(alice), "content-type": "text/plain"}
    wrong_type = requests.post(hub.url + "/api/message", data=b"{}", headers=text_type)
    assert wrong_type.status_code == 415 and wrong_type.content == b""


def test_from_comes_from_the_token_not_the_body(hub):
    alice, bob = hub.mint("alice"), hub.mint("bob")
    hub.post(alice, {"to": "bob", "from": "mallory", "payload": {"text": "hi"}})
    (msg,) = hub.poll("bob", bob)["messages"]
    assert msg["from"] == "alice"
    assert set(msg) == {"id", "from", "to", "type", "payload", "reply_to", "timestamp", "seq"}
    assert msg["type"] == "chat" and msg["reply_to"] is None and isinstance(msg["timestamp"], int)


def test_other_agents_token_cannot_read_or_ack_a_mailbox(hub):
    alice, bob = hub.mint("alice"), hub.mint("bob")
    hub.post(bob, {"to": "alice", "payload": {}})
    r = requests.get(hub.url + "/api/mailbox/alice?since=0", headers=auth(bob))
    assert r.status_code == 401 and r.json() == {"error": "unauthorized"}
    assert requests.get(hub.url + "/api/mailbox/alice?since=0").status_code == 401
    r = requests.post(hub.url + "/api/mailbox/alice/ack", json={"seq": 100}, headers=auth(bob))
    assert r.status_code == 401
    assert len(hub.poll("alice", alice)["messages"]) == 1


def test_seq_is_global_and_poll_is_since_ascending(hub):
    alice, bob, carol = hub.mint("alice"), hub.mint("bob"), hub.mint("carol")
    for i in range(3):
        hub.post(carol, {"to": "alice", "payload": {"i": i}})
        hub.post(carol, {"to": "bob", "payload": {"i": i}})
    a = hub.poll("alice", alice)
    b = hub.poll("bob", bob)
    assert [m["seq"] for m in a["messages"]] == [1, 3, 5]
    assert [m["seq"] for m in b["messages"]] == [2, 4, 6]
    assert a["last_seq"] == 5 and a["count"] == 3 and a["agent_id"] == "alice"
    assert [m["seq"] for m in hub.poll("alice", alice, since=1)["messages"]] == [3, 5]
    empty = hub.poll("alice", alice, since=5)
    assert empty["messages"] == [] and empty["last_seq"] == 5 and empty["count"] == 0
    assert len(hub.poll("alice", alice, since=-10)["messages"]) == 3
    no_since = requests.get(hub.url + "/api/mailbox/alice", headers=auth(alice)).json()
    assert len(no_since["messages"]) == 3


def test_non_integer_since_is_an_error_not_a_hang(hub):
    alice = hub.mint("alice")
    r = requests.get(hub.url + "/api/mailbox/alice?since=abc", headers=auth(alice), timeout=5)
    assert r.status_code == 500 and r.content == b"" and r.headers.get("connection") == "close"


def test_odd_requests_neither_hang_a_handler_nor_reach_the_log_raw(hub):
    """Issue 13: content-length -1 is refused at once; escape sequences in a path are logged escaped."""
    import socket

    alice = hub.mint("alice")

    def raw(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return data

    auth_line = b"Authorization: Bearer " + alice.encode() + b"\r\n"
    reply = raw(
        b"POST /api/message HTTP/1.1\r\nHost: x\r\n"
        + auth_line
        + b"content-type: application/json\r\ncontent-length: -1\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 400")
    assert raw(b"GET /api/\x1b[2Jevil HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 404")
    log = hub.log_path.read_bytes()
    assert b"\x1b" not in log and b"\\x1b[2Jevil" in log and b"Traceback" not in log


def test_broadcast_reaches_every_other_token_holder(hub):
    tokens = {name: hub.mint(name) for name in ("alice", "bob", "carol", "dave")}
    ids = set()
    for to in (None, "broadcast", "omit"):
        body = {"payload": {"text": "all hands"}}
        if to != "omit":
            body["to"] = to
        ids.add(hub.post(tokens["alice"], body).json()["id"])
    assert len(ids) == 3
    assert hub.poll("alice", tokens["alice"])["messages"] == []
    seqs = []
    for name in ("bob", "carol", "dave"):
        msgs = hub.poll(name, tokens[name])["messages"]
        assert {m["id"] for m in msgs} == ids
        seqs += [m["seq"] for m in msgs]
    assert len(set(seqs)) == 9, "each stored copy gets its own seq"


def test_ack_is_a_prefix_and_validated(hub):
    alice, bob = hub.mint("alice"), hub.mint("bob")
    for i in range(4):
        hub.post(bob, {"to": "alice", "payload": {"i": i}})
    r = requests.post(hub.url + "/api/mailbox/alice/ack", json={"seq": 2}, headers=auth(alice))
    assert r.status_code == 200 and r.json() == {"status": "acked", "up_to": 2}
    assert [m["seq"] for m in hub.poll("alice", alice)["messages"]] == [3, 4]
    for bad in ({}, {"seq": "3"}, {"seq": 2.5}, {"seq": True}):
        r = requests.post(hub.url + "/api/mailbox/alice/ack", json=bad, headers=auth(alice))
        assert r.status_code == 422 and r.json()["error"] == "validation_failed"
    r = requests.post(hub.url + "/api/mailbox/alice/ack", json={"seq": 10**9}, headers=auth(alice))
    assert r.status_code == 200 and r.json()["up_to"] == 10**9
    assert hub.poll("alice", alice)["messages"] == []


def test_mailbox_cap_drops_the_oldest(hub_factory):
    hub = hub_factory("--mailbox-cap", "5")
    alice, bob = hub.mint("alice"), hub.mint("bob")
    for i in range(8):
        hub.post(bob, {"to": "alice", "payload": {"i": i}})
    msgs = hub.poll("alice", alice)["messages"]
    assert [m["payload"]["i"] for m in msgs] == [3, 4, 5, 6, 7]


def test_ttl_evicts_old_messages_by_the_hubs_clock(tmp_path):
    """TTL with an injected clock: a message one second short of the TTL stays, past it goes."""
    from agentcom_skill.hub.store import HubStore

    now = [1_000_000.0]
    store = HubStore(tmp_path / "hub.sqlite3", ttl_days=1.0, clock=lambda: now[0])
    try:
        store.post("bob", "alice", "chat", {}, None)
        now[0] += 86_400 - 1
        assert len(store.poll("alice", 0)) == 1
        now[0] += 2
        assert store.poll("alice", 0) == []
    finally:
        store.close()


def test_ttl_option_reaches_the_running_hub(hub_factory):
    """End to end, with a margin no loaded machine eats: a 0.5 s TTL, polled after 3 s."""
    hub = hub_factory("--ttl-days", "0.000006")  # about 0.5 s
    alice, bob = hub.mint("alice"), hub.mint("bob")
    hub.post(bob, {"to": "alice", "payload": {}})
    time.sleep(3)
    assert hub.poll("alice", alice)["messages"] == []


def test_message_survives_kill_9_and_restart_on_the_same_port(hub):
    alice, bob = hub.mint("alice"), hub.mint("bob")
    msg_id = hub.post(bob, {"to": "alice", "payload": {"text": "durable"}}).json()["id"]
    hub.restart(signal.SIGKILL)
    (msg,) = hub.poll("alice", alice)["messages"]
    assert msg["id"] == msg_id and msg["payload"] == {"text": "durable"}


def test_counter_restarts_at_zero_once_everything_was_acked(hub):
    alice, bob = hub.mint("alice"), hub.mint("bob")
    for _ in range(3):
        hub.post(bob, {"to": "alice", "payload": {}})
    requests.post(hub.url + "/api/mailbox/alice/ack", json={"seq": 3}, headers=auth(alice)).raise_for_status()
    hub.restart()
    hub.post(bob, {"to": "alice", "payload": {"text": "after restart"}})
    assert hub.poll("alice", alice, since=3)["messages"] == [], "the quirk: a since-cursor client misses it"
    (msg,) = hub.poll("alice", alice)["messages"]
    assert msg["seq"] == 1


def test_counter_resumes_from_the_highest_stored_seq(hub):
    alice, bob = hub.mint("alice"), hub.mint("bob")
    for _ in range(3):
        hub.post(bob, {"to": "alice", "payload": {}})
    hub.restart()
    hub.post(bob, {"to": "alice", "payload": {}})
    assert [m["seq"] for m in hub.poll("alice", alice)["messages"]] == [1, 2, 3, 4]


def test_rate_limiter_by_its_clock():
    """The real hub's buckets with an injected clock: a burst of 60 messages, then one a second,
    a refusal rounded up to whole seconds, a warning when less than a fifth is left; per key and
    per tier; a rate below one a second still lets one request through."""
    from agentcom_skill.hub.limits import RateLimiter, Tier, hub_limiter

    now = [0.0]
    limiter = hub_limiter(clock=lambda: now[0])
    verdicts = [limiter.check(("http", "a"), "normal") for _ in range(60)]
    assert all(v.allowed for v in verdicts) and verdicts[-1].remaining == 0
    assert [v.warn for v in verdicts].index(True) == 48, "warned once fewer than 12 of 60 are left"
    refused = limiter.check(("http", "a"), "normal")
    assert not refused.allowed and refused.retry_after_ms == 1000 and refused.tier == "normal"
    assert limiter.refusal(refused) == (
        {"error": "rate_limited", "retry_after_ms": 1000, "tier": "normal"},
        {"retry-after": "1"},
    )
    assert limiter.check(("http", "b"), "normal").allowed, "per key"
    assert limiter.check(("http", "a"), "light").allowed, "per tier"
    now[0] += 1.0
    assert limiter.check(("http", "a"), "normal").allowed
    assert not limiter.check(("http", "a"), "normal").allowed
    heavy = [limiter.check(("http", "ip"), "heavy").allowed for _ in range(11)]
    assert heavy == [True] * 10 + [False] and limiter.check(("http", "ip"), "heavy").retry_after_ms == 6000
    slow = RateLimiter({"normal": Tier("normal", 0.5, 0.5)}, clock=lambda: now[0])
    assert slow.check(("a",), "normal").allowed and slow.check(("a",), "normal").retry_after_ms == 2000
    now[0] += 2
    assert slow.check(("a",), "normal").allowed


def test_rate_limit_answers_429_with_retry_after(hub_factory):
    """End to end: one message per 100 s, so the second, sent right after, is refused with any
    machine load; the refill itself is tested with an injected clock above."""
    hub = hub_factory("--rate-limit", "0.01", "--rate-burst", "1")
    alice = hub.mint("alice")
    hub.mint("bob")
    assert hub.post(alice, {"to": "bob", "payload": {}}).status_code == 200
    r = hub.post(alice, {"to": "bob", "payload": {}})
    assert r.status_code == 429 and r.headers["retry-after"] == "100"
    assert r.json() == {"error": "rate_limited", "retry_after_ms": 100_000, "tier": "normal"}


def post_from_twenty_clients(hub) -> list[str]:
    """20 concurrent clients post 50 messages each to `inbox`; returns the ids the hub gave."""
    senders = [hub.mint(f"s{i}") for i in range(20)]

    def burst(token):
        with requests.Session() as s:
            return [
                s.post(hub.url + "/api/message", json={"to": "inbox", "payload": {"n": n}}, headers=auth(token)).json()[
                    "id"
                ]
                for n in range(50)
            ]

    with ThreadPoolExecutor(20) as pool:
        return [i for batch in pool.map(burst, senders) for i in batch]


def test_rate_limit_also_limits_registration_per_ip(hub_factory):
    hub = hub_factory("--rate-limit", "1")  # the default limits
    codes = [
        requests.post(hub.url + "/api/onboard/register", json={"agent_id": f"a{i}"}).status_code for i in range(11)
    ]
    assert codes[:10] == [201] * 10 and codes[10] == 429


def test_twenty_concurrent_clients_lose_and_duplicate_nothing(hub):
    inbox = hub.mint("inbox")
    ids = post_from_twenty_clients(hub)
    assert len(ids) == 1000 == len(set(ids))
    kept = hub.poll("inbox", inbox)["messages"]
    # the default cap is 100: the newest 100 are kept, each once, seqs strictly increasing
    seqs = [m["seq"] for m in kept]
    assert len(seqs) == 100 and seqs == sorted(set(seqs)) and seqs[-1] == 1000


def test_concurrent_posts_all_stored_with_a_raised_cap(hub_factory):
    hub = hub_factory("--mailbox-cap", "2000")
    inbox = hub.mint("inbox")
    ids = set(post_from_twenty_clients(hub))
    msgs = hub.poll("inbox", inbox)["messages"]
    assert {m["id"] for m in msgs} == ids and len(msgs) == 1000
    assert [m["seq"] for m in msgs] == list(range(1, 1001))


def test_log_lines_never_carry_a_token_and_sigterm_stops_cleanly(hub):
    alice = hub.mint("alice")
    requests.get(f"{hub.url}/api/mailbox/alice?since=0&token={alice}")
    hub.post(alice, {"to": "bob", "payload": {}})
    assert hub.stop(signal.SIGTERM) == 0
    log = hub.log_path.read_text()
    assert "POST /api/message 200" in log
    assert alice not in log


def test_unknown_route_is_404_and_port_is_released_after_stop(hub):
    assert requests.get(hub.url + "/nope").status_code == 404
    hub.stop()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", hub.port))


# the WebSocket side (push model) ---------------------------------------------------------


def ws_connect(hub):
    from websockets.sync.client import connect

    return connect(hub.url.replace("http://", "ws://") + "/ws", proxy=None, open_timeout=30)


def ws_call(ws, frame):
    ws.send(json.dumps(frame))
    return json.loads(ws.recv(timeout=30))


def test_ws_identify_errors_and_frames_before_identify(hub):
    alice, bob = hub.mint("alice"), hub.mint("bob")
    with ws_connect(hub) as ws:
        assert ws_call(ws, {"type": "ping"}) == {"type": "error", "error": "not_identified"}
        assert ws_call(ws, {"type": "identify", "agent_id": "alice", "token": "f" * 64})["error"] == "invalid_token"
        assert ws_call(ws, {"type": "identify", "agent_id": "alice", "token": bob})["error"] == "token_agent_mismatch"
        assert ws_call(ws, {"type": "identify", "agent_id": "alice", "token": alice}) == {
            "type": "identified",
            "agent_id": "alice",
        }
        assert ws_call(ws, {"type": "ping"})["type"] == "pong"
        unknown = ws_call(ws, {"type": "dance"})
        assert unknown["error"] == "validation_failed" and "identify" in unknown["errors"][0]["known_types"]


def test_ws_connected_agents_get_pushes_not_mailbox_entries(hub):
    alice, bob, carol = hub.mint("alice"), hub.mint("bob"), hub.mint("carol")
    with ws_connect(hub) as ws:
        ws_call(
            ws, {"type": "identify", "agent_id": "alice", "token": alice, "status": "busy", "capabilities": ["code"]}
        )
        listed = requests.get(hub.url + "/api/agents").json()["agents"]
        assert [(a["agent_id"], a["status"], a["capabilities"]) for a in listed] == [("alice", "busy", ["code"])]
        assert requests.get(hub.url + "/health").json()["agents_connected"] == 1
        direct = hub.post(
            bob, {"to": "alice", "type": "request", "payload": {"text": "hi"}, "reply_to": "0" * 16}
        ).json()["id"]
        pushed = json.loads(ws.recv(timeout=30))
        assert pushed == {
            **pushed,
            "type": "message",
            "id": direct,
            "from": "bob",
            "message_type": "request",
            "payload": {"text": "hi"},
            "reply_to": "0" * 16,
        }
        assert "seq" not in pushed and isinstance(pushed["timestamp"], int)
        hub.post(bob, {"payload": {"text": "everyone"}})
        assert json.loads(ws.recv(timeout=30))["payload"] == {"text": "everyone"}
        assert hub.poll("alice", alice)["messages"] == [], "nothing stored while connected"
        assert [m["payload"] for m in hub.poll("carol", carol)["messages"]] == [{"text": "everyone"}]
        sent = ws_call(ws, {"type": "message", "to": "carol", "payload": {"text": "over the socket"}})
        assert sent["type"] == "message_sent" and hub.poll("carol", carol)["messages"][-1]["id"] == sent["id"]
        assert ws_call(ws, {"type": "status", "status": "idle"}) == {"type": "status_updated"}
    # after disconnect, messages are stored again
    for _ in range(300):
        if requests.get(hub.url + "/api/agents").json()["agents"] == []:
            break
        time.sleep(0.1)
    assert requests.get(hub.url + "/api/agents").json()["agents"] == []
    hub.post(bob, {"to": "alice", "payload": {"text": "stored"}})
    assert [m["payload"] for m in hub.poll("alice", alice)["messages"]] == [{"text": "stored"}]


def test_ws_idle_connection_is_closed_with_1002_and_no_reason(hub_factory):
    """As the real hub closes a socket nothing went through for its idle time."""
    from websockets.exceptions import ConnectionClosed

    hub = hub_factory("--ws-idle-timeout", "0.5")
    alice = hub.mint("alice")
    with ws_connect(hub) as ws:
        ws_call(ws, {"type": "identify", "agent_id": "alice", "token": alice})
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=60)
        assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (1002, "")
