"""The local hub's channels and room as the real hub has them (issue 26 item 7; protocol.md
1.8): HTTP routes and their answers, mailbox copies of channel messages, socket frames, the
history cap, name normalisation, the room's ring and its since/limit quirk, no echo."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from test_hub_socket import call, frames_until_pong, identify, ws_connect


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post(hub: Any, path: str, token: str | None, body: Any = None) -> requests.Response:
    headers = _auth(token) if token else {}
    return requests.post(hub.url + path, json={} if body is None else body, headers=headers, timeout=30)


def get(hub: Any, path: str) -> Any:
    r = requests.get(hub.url + path, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def two(hub):
    return hub, hub.mint("alice"), hub.mint("bob")


def test_normalise_is_the_real_hubs():
    from agentcom_skill.hub.groups import normalize, take

    assert normalize("##Re-Search_1!") == "re-search_1"
    assert normalize("#é x") == "x"
    assert take([1, 2, 3], 2) == [1, 2] and take([1, 2, 3], -2) == [2, 3] and take([1, 2], -5) == [1, 2]


def test_channel_http_routes_answer_as_the_real_hub(two):
    hub, alice, bob = two
    r = post(hub, "/api/channels", alice, {"name": "#Research!", "description": "papers"})
    assert (r.status_code, r.json()) == (201, {"status": "created", "channel": "#Research!"})
    assert post(hub, "/api/channels", alice, {"name": "research"}).json() == {"error": "channel_exists"}
    r = post(hub, "/api/channels", alice, {})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "name"
    assert post(hub, "/api/channels", None, {"name": "x"}).status_code == 401
    r = post(hub, "/api/channels/%23RESEARCH/subscribe", bob)
    assert r.json() == {"status": "subscribed", "channel": "#RESEARCH"}
    assert post(hub, "/api/channels/research/subscribe", bob).json() == {"status": "already_subscribed"}
    assert post(hub, "/api/channels/research/subscribe", alice).json()["status"] == "subscribed"
    r = post(hub, "/api/channels/nope/subscribe", alice)
    assert (r.status_code, r.json()) == (404, {"error": "channel_not_found"})
    info = get(hub, "/api/channels/Research")
    assert info["subscribers"] == ["alice", "bob"] and info["subscriber_count"] == 2
    assert info["created_by"] == "alice" and info["description"] == "papers" and info["name"] == "research"
    listing = get(hub, "/api/channels")["channels"]
    assert [(c["name"], c["subscriber_count"], c["description"]) for c in listing] == [("research", 2, "papers")]
    assert get(hub, "/api/agents/bob/subscriptions") == {"agent_id": "bob", "channels": ["research"]}

    r = post(hub, "/api/channels/research/publish", alice, {"payload": {"text": "hi @bob"}})
    assert r.json() == {"status": "published", "seq": 1}
    r = post(hub, "/api/channels/research/publish", alice, {"payload": {"text": "x"}, "type": "q", "reply_to": "ab"})
    assert r.json() == {"status": "published", "seq": 2}
    assert post(hub, "/api/channels/research/publish", alice, {"payload": "x"}).status_code == 422
    history = get(hub, "/api/channels/research/history")
    assert history["channel"] == "research" and history["count"] == 2
    first = history["messages"][0]
    assert first["seq"] == 1 and set(first) == {"seq", "message", "stored_at"}
    assert first["message"]["payload"] == {"text": "hi @bob"} and first["message"]["to"] is None
    assert get(hub, "/api/channels/research/history?since=1&limit=5")["count"] == 1

    # The mailbox copy: every other subscriber's, payload.channel set, to null, the history's id.
    mail = hub.poll("bob", bob)["messages"]
    assert [m["payload"] for m in mail] == [
        {"text": "hi @bob", "channel": "research"},
        {"text": "x", "channel": "research"},
    ]
    assert mail[0]["to"] is None and mail[0]["id"] == first["message"]["id"] and mail[1]["reply_to"] == "ab"
    assert mail[1]["type"] == "q"
    assert hub.poll("alice", alice)["messages"] == []  # never the sender's

    assert post(hub, "/api/channels/research/unsubscribe", bob).json()["status"] == "unsubscribed"
    post(hub, "/api/channels/research/publish", alice, {"payload": {"text": "after"}})
    assert len(hub.poll("bob", bob)["messages"]) == 2


def test_channel_history_keeps_the_last_200_and_gives_the_newest_limit(two):
    hub, alice, _ = two
    post(hub, "/api/channels", alice, {"name": "busy"})
    for n in range(205):
        post(hub, "/api/channels/busy/publish", alice, {"payload": {"n": n}})
    seqs = [e["seq"] for e in get(hub, "/api/channels/busy/history?limit=1000")["messages"]]
    assert seqs == list(range(6, 206))
    assert [e["seq"] for e in get(hub, "/api/channels/busy/history")["messages"]] == list(range(156, 206))


def test_room_ring_its_quirk_and_the_human_route(two):
    hub, alice, _ = two
    r = post(hub, "/api/room/message", alice, {"text": "one"})
    assert r.status_code == 201 and r.json()["from"] == "alice" and r.json()["seq"] == 1
    assert set(r.json()) == {"from", "seq", "text", "timestamp", "type"} and r.json()["type"] == "chat"
    assert post(hub, "/api/room/message", alice, {"text": ""}).json() == {"error": "text is required"}
    assert post(hub, "/api/room/message", None, {"text": "x"}).status_code == 401
    r = post(hub, "/api/room/message/human", alice, {"from": "alice", "text": "forged"})
    assert r.json()["from"] == "alice" and r.json()["seq"] == 2  # any name, an agent's too
    assert post(hub, "/api/room/message/human", alice, {"from": "Bob"}).json() == {
        "error": "from and text are required"
    }
    post(hub, "/api/room/message/human", alice, {"from": "Bob", "text": "three"})
    got = get(hub, "/api/room/messages?since=0&limit=1")
    assert got["last_seq"] == 3 and [m["seq"] for m in got["messages"]] == [3]  # the newest, not the next
    assert [m["text"] for m in get(hub, "/api/room/messages")["messages"]] == ["one", "forged", "three"]
    assert get(hub, "/api/room/participants") == {"participants": ["Bob", "alice"]}


def test_room_ring_holds_500_and_starts_again_after_a_restart(two):
    from agentcom_skill.hub.groups import Room

    room = Room(clock=lambda: 1)
    for n in range(505):
        room.post("a", str(n), "chat")
    messages, last = room.messages(0, 1000)
    assert last == 505 and [m["seq"] for m in messages] == list(range(6, 506))
    hub, alice, _ = two
    post(hub, "/api/room/message", alice, {"text": "before"})
    hub.restart()
    assert get(hub, "/api/room/messages") == {"last_seq": 0, "messages": []}
    assert post(hub, "/api/room/message", alice, {"text": "after"}).json()["seq"] == 1


def test_channels_survive_a_restart(two):
    hub, alice, bob = two
    post(hub, "/api/channels", alice, {"name": "kept"})
    post(hub, "/api/channels/kept/subscribe", bob)
    post(hub, "/api/channels/kept/publish", alice, {"payload": {"text": "x"}})
    hub.restart()
    assert get(hub, "/api/channels/kept")["subscribers"] == ["bob"]
    assert get(hub, "/api/channels/kept/history")["count"] == 1


def test_socket_frames_pushes_and_no_echo(two):
    hub, alice, bob = two
    post(hub, "/api/channels", alice, {"name": "live"})
    post(hub, "/api/channels/live/subscribe", bob)  # before bob's socket identifies: it listens
    with ws_connect(hub) as wa, ws_connect(hub) as wb:
        identify(wa, "alice", alice)
        identify(wb, "bob", bob)
        frames_until_pong(wa)
        assert call(wa, {"type": "channel_subscribe", "channel": "#Live"}) == {
            "type": "channel_subscribed",
            "channel": "#Live",
        }
        assert frames_until_pong(wb) == [{"type": "channel_agent_joined", "channel": "live", "agent_id": "alice"}]
        again = call(wa, {"type": "channel_subscribe", "channel": "live"})
        assert again == {"type": "channel_subscribed", "channel": "live", "note": "already_subscribed"}
        assert call(wa, {"type": "channel_subscribe", "channel": "nope"}) == {
            "type": "error",
            "error": "channel_not_found",
        }
        published = call(wa, {"type": "channel_publish", "channel": "live", "payload": {"text": "hey"}})
        assert published["type"] == "channel_published" and published["seq"] == 1 and published["channel"] == "live"
        pushed = frames_until_pong(wb)
        assert len(pushed) == 1 and pushed[0]["type"] == "channel_message" and pushed[0]["channel"] == "live"
        assert pushed[0]["id"] == published["id"] and pushed[0]["payload"] == {"text": "hey"}
        assert pushed[0]["message_type"] == "chat" and pushed[0]["reply_to"] is None
        assert frames_until_pong(wa) == []  # no echo to the sender
        # ... and the same message (same id) in bob's mailbox, although bob is connected
        assert [m["id"] for m in hub.poll("bob", bob)["messages"]] == [published["id"]]

        history = call(wa, {"type": "channel_history", "channel": "live", "limit": 5})
        assert history["type"] == "channel_history" and len(history["messages"]) == 1
        assert call(wa, {"type": "list_channels"})["channels"][0]["subscriber_count"] == 2

        # The room: every identified socket but the sender's.
        post(hub, "/api/room/message", alice, {"text": "room hi"})
        room = frames_until_pong(wb)
        assert [(f["type"], f["from"], f["text"], f["seq"], f["message_type"]) for f in room] == [
            ("room_message", "alice", "room hi", 1, "chat")
        ]
        assert frames_until_pong(wa) == []
        post(hub, "/api/room/message/human", alice, {"from": "bob", "text": "claims bob"})
        assert frames_until_pong(wb) == []  # "from" bob: not pushed to bob
        assert [f["from"] for f in frames_until_pong(wa)] == ["bob"]

        # Unsubscribing over HTTP leaves an open socket listening (real-hub quirk) ...
        post(hub, "/api/channels/live/unsubscribe", bob)
        post(hub, "/api/channels/live/publish", alice, {"payload": {"text": "still pushed"}})
        assert [f.get("type") for f in frames_until_pong(wb)] == ["channel_message"]
        # ... a frame stops it.
        assert call(wa, {"type": "channel_unsubscribe", "channel": "live"})["type"] == "channel_unsubscribed"
        wb_frame = {"type": "channel_unsubscribe", "channel": "live"}
        assert call(wb, wb_frame) == {"type": "channel_unsubscribed", "channel": "live"}
        post(hub, "/api/channels", alice, {"name": "other"})
        call(wa, {"type": "channel_subscribe", "channel": "other"})
        post(hub, "/api/channels/live/publish", alice, {"payload": {"text": "nobody"}})
        assert frames_until_pong(wb) == []


def test_history_and_room_reads_with_a_bad_integer_crash_as_there(two):
    hub, _, _ = two
    assert requests.get(hub.url + "/api/room/messages?since=x", timeout=30).status_code == 500
    assert requests.get(hub.url + "/api/channels/a/history?limit=x", timeout=30).status_code == 500
    assert json.loads(requests.get(hub.url + "/api/channels/a/history", timeout=30).text)["count"] == 0


# parity with the real hub ------------------------------------------------------------------

REALHUB_URL = __import__("os").environ.get("REALHUB_URL", "").rstrip("/")


def _normalised(value: Any, names: dict[str, str]) -> str:
    import re

    text = json.dumps(value, sort_keys=True)
    for real, alias in names.items():
        text = text.replace(real, alias).replace(real.upper(), alias)
    text = re.sub(r'"[0-9a-f]{16}"', '"ID"', text)
    return re.sub(r'"(seq|last_seq|timestamp|stored_at|created_at)": -?\d+', r'"\1": N', text)


def _probe(url: str, mint: Any) -> list[str]:
    """What a client sees of channels and the room: answers over HTTP and frames over the socket."""
    from websockets.sync.client import connect

    (a, ta), (b, tb) = mint("pa"), mint("pb")
    ch = f"par-{__import__('secrets').token_hex(3)}"
    names = {ch: "CH", a: "A", b: "B"}
    seen: list[str] = []

    def http(method: str, path: str, token: str | None = None, body: Any = None, raw: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if raw is not None:
            headers["content-type"] = "application/json"
        r = requests.request(method, url + path, json=None if raw is not None else body, data=raw, headers=headers)
        answer = r.json() if r.content else None
        line = f"{method} {path} {r.status_code} " + _normalised(answer, names)
        for real, alias in names.items():
            line = line.replace(real, alias)
        seen.append(line)

    http("POST", "/api/channels", ta, {"name": f"#{ch.upper()}!"})
    http("POST", "/api/channels", ta, {"name": ch, "description": 5})
    http("POST", f"/api/channels/{ch}/subscribe", tb, {})
    http("POST", f"/api/channels/{ch}/subscribe", tb, {})
    http("POST", f"/api/channels/{ch}/subscribe", None, {})
    http("POST", f"/api/channels/{ch}/publish", ta, {"payload": {"text": "x"}, "type": 5})
    http("POST", f"/api/channels/{ch}/publish", ta, {"payload": {"text": "x"}})
    http("POST", f"/api/channels/{ch}/publish", ta, raw="not json")
    http("POST", f"/api/channels/nope-{ch}/publish", ta, {"payload": {}})
    for query in ("limit=0", "limit=-1", "since=1"):
        http("GET", f"/api/channels/{ch}/history?{query}")
    http("GET", f"/api/channels/nope-{ch}/history")
    http("GET", f"/api/channels/nope-{ch}")
    http("GET", f"/api/agents/{b}/subscriptions")
    http("POST", "/api/room/message", ta, {"text": 5})
    http("POST", "/api/room/message/human", ta, {"from": "", "text": "t"})
    http("GET", "/api/room/messages?limit=0")

    def ws() -> Any:
        return connect(url.replace("http://", "ws://") + "/ws", proxy=None, open_timeout=30, ping_interval=None)

    with ws() as wa, ws() as wb:
        identify(wa, a, ta)
        identify(wb, b, tb)
        frames_until_pong(wa), frames_until_pong(wb)
        seen.append(_normalised(call(wa, {"type": "channel_subscribe", "channel": f"#{ch.upper()}"}), names))
        seen.append(_normalised(frames_until_pong(wb), names))
        seen.append(_normalised(call(wa, {"type": "channel_subscribe", "channel": ch}), names))
        seen.append(_normalised(call(wa, {"type": "channel_publish", "channel": ch, "payload": {"t": 1}}), names))
        seen.append(_normalised([frames_until_pong(wb), frames_until_pong(wa)], names))
        http("POST", f"/api/channels/{ch}/unsubscribe", tb, {})
        http("POST", f"/api/channels/{ch}/publish", ta, {"payload": {"text": "after"}})
        seen.append(_normalised(frames_until_pong(wb), names))
        http("POST", "/api/room/message/human", ta, {"from": b, "text": "claims b"})
        rooms = [[f for f in frames_until_pong(w) if f["type"] == "room_message"] for w in (wb, wa)]
        seen.append(_normalised(rooms, names))
        seen.append(_normalised(call(wa, {"type": "channel_history", "channel": ch, "limit": 1}), names))
    return seen


@pytest.mark.realhub
def test_the_local_hub_answers_as_the_real_hub_does(hub):
    """The same calls and frames, on both hubs, give the same answers (ids, times and seqs aside)."""
    import secrets

    if not REALHUB_URL:
        pytest.skip("REALHUB_URL is not set")
    first = requests.post(
        REALHUB_URL + "/api/onboard/register", json={"agent_id": f"channels-par-{secrets.token_hex(3)}"}, timeout=30
    )
    assert first.status_code == 201, first.text
    minter = first.json()["token"]

    def mint_real(name: str) -> tuple[str, str]:
        agent = f"channels-{name}-{secrets.token_hex(3)}"
        r = requests.post(
            REALHUB_URL + "/admin/tokens", json={"agent_id": agent}, headers={"Authorization": f"Bearer {minter}"}
        )
        return agent, r.json()["token"]

    def mint_local(name: str) -> tuple[str, str]:
        agent = f"channels-{name}-{secrets.token_hex(3)}"
        return agent, hub.mint(agent)

    assert _probe(hub.url, mint_local) == _probe(REALHUB_URL, mint_real)
