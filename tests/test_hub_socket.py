"""The local hub's WebSocket side as the real hub behaves (issues 19 and 21): the idle timer,
the frame types it knows, per-field validation errors, broadcasts back to their sender, two
sockets under one agent id, presence events, socket rate limits, frames nested too deep.

The clients here never ping unless a test says so, like the hub project's own scripts."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
from hubprocess import eventually


def ws_connect(hub: Any) -> Any:
    from websockets.sync.client import connect

    return connect(hub.url.replace("http://", "ws://") + "/ws", proxy=None, open_timeout=30, ping_interval=None)


def call(ws: Any, frame: dict[str, Any]) -> dict[str, Any]:
    ws.send(json.dumps(frame))
    return json.loads(ws.recv(timeout=30))


def identify(ws: Any, agent: str, token: str, **extra: Any) -> None:
    answer = call(ws, {"type": "identify", "agent_id": agent, "token": token, **extra})
    assert answer == {"type": "identified", "agent_id": agent}


def frames_until_pong(ws: Any) -> list[dict[str, Any]]:
    """Every frame the hub had queued for this socket, ended by the pong of a fresh ping."""
    ws.send(json.dumps({"type": "ping"}))
    seen = []
    while (frame := json.loads(ws.recv(timeout=30)))["type"] != "pong":
        seen.append(frame)
    return seen


def listed(hub: Any) -> list[dict[str, Any]]:
    return requests.get(hub.url + "/api/agents", timeout=30).json()["agents"]


# the idle timer ------------------------------------------------------------------------------


class FakeConnection:
    """Stands for a websockets connection; time passes only when the hub waits for a frame."""

    def __init__(self, clock: list[float], script: list[Any]):
        self.clock, self.script = clock, script
        self.sent: list[tuple[float, dict[str, Any]]] = []
        self.closed: tuple[int, str] | None = None

    def recv(self, timeout: float) -> Any:
        step = self.script.pop(0) if self.script else None
        if callable(step):  # something else happens while the hub waits
            return step(self, timeout)
        self.clock[0] += timeout
        raise TimeoutError

    def send(self, text: str) -> None:
        self.sent.append((self.clock[0], json.loads(text)))

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = self.closed or (code, reason)


def test_idle_timer_counts_traffic_in_both_directions_by_its_clock():
    """Issue 21 item 2: a client that never sends a frame stays connected while the hub pushes
    to it; once nothing went either way for the idle time, the hub closes with 1002, no reason."""
    from agentcom_skill.hub.ws import Presence, Session, SocketContext

    clock = [1000.0]
    session_box: list[Session] = []

    def push_after(seconds: float):
        def step(conn: FakeConnection, timeout: float) -> Any:
            assert timeout > seconds, "the hub waits its whole idle time"
            conn.clock[0] += seconds
            session_box[0].peer.send({"type": "message", "id": "x"})  # a push from another thread
            raise TimeoutError

        return step

    def client_frame(seconds: float):
        def step(conn: FakeConnection, timeout: float) -> Any:
            conn.clock[0] += seconds
            return json.dumps({"type": "ping"})

        return step

    script = [push_after(50), push_after(50), push_after(50), client_frame(59), None, None]
    conn = FakeConnection(clock, script)
    context = SocketContext(
        agent_for_token=lambda t: None,
        deliver=lambda *a: "",
        presence=Presence(),
        idle_timeout=60,
        log=lambda line: None,
        clock=lambda: clock[0],
        identify_timeout=3600,  # this test is about the idle timer alone
    )
    session = Session(conn, context)
    session_box.append(session)
    session.run()
    assert conn.closed == (1002, "")
    # pushes at 1050, 1100, 1150, a client frame at 1209 (answered), then silence: closed at 1269
    assert clock[0] == pytest.approx(1269.0)
    assert [f["type"] for _, f in conn.sent] == ["message", "message", "message", "error"]


def test_a_socket_that_never_identifies_is_closed_at_its_deadline_whatever_it_sends():
    """Issue 27.10: a socket costs the local hub a thread, so one that keeps sending frames
    without identifying is closed `identify_timeout` s after it opened (1002, no reason, as
    the real hub closes a silent one); an identified socket is not."""
    from agentcom_skill.hub.ws import Presence, Session, SocketContext

    waits: list[float] = []

    def client_frame(seconds: float, frame: dict[str, Any]):
        def step(conn: FakeConnection, timeout: float) -> Any:
            waits.append(conn.clock[0] + timeout)
            conn.clock[0] += seconds
            return json.dumps(frame)

        return step

    def run(script: list[Any]) -> tuple[FakeConnection, float]:
        clock = [1000.0]
        conn = FakeConnection(clock, script)
        context = SocketContext(
            agent_for_token=lambda t: "alice" if t == "t" else None,
            deliver=lambda *a: "",
            presence=Presence(),
            idle_timeout=60,
            log=lambda line: None,
            clock=lambda: clock[0],
            identify_timeout=30,
        )
        Session(conn, context).run()
        return conn, clock[0]

    conn, closed_at = run([client_frame(10, {"type": "ping"}) for _ in range(10)])
    assert conn.closed == (1002, "") and closed_at == pytest.approx(1030.0)
    assert max(waits) <= 1030.0, "the hub never waits past the identify deadline"
    assert [f["error"] for _, f in conn.sent] == ["not_identified"] * 3  # at 1010, 1020, 1030: then closed
    identify = {"type": "identify", "agent_id": "alice", "token": "t"}
    conn, closed_at = run([client_frame(10, identify)] + [client_frame(10, {"type": "ping"}) for _ in range(10)])
    assert closed_at == pytest.approx(1000 + 110 + 60), "identified: only the idle timer closes it"


def test_the_hub_closes_a_socket_that_does_not_identify_in_time(hub_factory):
    from websockets.exceptions import ConnectionClosed

    hub = hub_factory("--identify-timeout", "1")
    alice = hub.mint("alice")
    with ws_connect(hub) as lingering, ws_connect(hub) as identified:
        identify(identified, "alice", alice)
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(600):  # 60 s at most: a frame every 0.1 s never keeps it open
                assert call(lingering, {"type": "ping"})["error"] == "not_identified"
                time.sleep(0.1)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1002
        assert call(identified, {"type": "ping"})["type"] == "pong", "an identified socket stays"


def test_a_clients_close_is_echoed_with_its_code_and_no_reason(hub):
    """Issue 25.5: as the real hub answers a close."""
    alice = hub.mint("alice")
    with ws_connect(hub) as ws:
        identify(ws, "alice", alice)
        ws.close(1000, "bye now")
        assert ws.protocol.close_rcvd is not None
        assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (1000, "")


def test_a_never_pinging_client_is_closed_with_1002_when_idle(hub_factory):
    from websockets.exceptions import ConnectionClosed

    hub = hub_factory("--ws-idle-timeout", "0.5")
    alice = hub.mint("alice")
    with ws_connect(hub) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=60)  # not even identified
        assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (1002, "")
    with ws_connect(hub) as ws:
        identify(ws, "alice", alice)
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=60)


# frame types and validation errors -----------------------------------------------------------


KNOWN = [
    "channel_history",
    "channel_publish",
    "channel_subscribe",
    "channel_unsubscribe",
    "identify",
    "list_agents",
    "list_channels",
    "message",
    "ollama_report",
    "ping",
    "resource_report",
    "state_report",
    "status",
    "task_accepted",
    "task_complete",
    "task_failed",
    "task_progress",
    "task_recovering",
    "wake_result",
]


def test_the_real_hubs_frame_types_are_accepted_and_ignored(hub):
    """Issue 21 item 3: the hub project's sidecar sends resource_report every 30 s and more;
    each is accepted silently (no error frame), the channel frames get what a hub without
    channels answers."""
    alice = hub.mint("alice")
    with ws_connect(hub) as ws:
        identify(ws, "alice", alice)
        for frame in (
            {"type": "resource_report", "cpu_percent": 12.5, "ram_used_bytes": 1 << 30, "timestamp": 1},
            {"type": "state_report", "task_id": "t-1", "status": "working", "generation": 1},
            {"type": "wake_result", "task_id": "t-1", "status": "failed", "attempt": 0},
            {"type": "ollama_report", "ollama_url": "http://localhost:11434"},
            {"type": "task_accepted", "task_id": "t-1"},
            {"type": "task_progress", "task_id": "t-1", "progress": 50},
            {"type": "task_complete", "task_id": "t-1", "generation": 1, "result": {}},
            {"type": "task_failed", "task_id": "t-1", "generation": 1, "error": "x"},
            {"type": "task_recovering", "task_id": "t-1"},
        ):
            ws.send(json.dumps(frame))
            assert frames_until_pong(ws) == [], frame["type"]
        for frame in ({"type": "state_report", "state": "idle"}, {"type": "wake_result", "status": "ok"}):
            refused = call(ws, frame)  # the real hub's schema: both name a task
            assert refused["error"] == "validation_failed" and refused["errors"][0]["field"] == "task_id", refused
        assert call(ws, {"type": "list_channels"}) == {"type": "channels", "channels": []}
        not_found = {"type": "error", "error": "channel_not_found"}
        assert call(ws, {"type": "channel_subscribe", "channel": "ops"}) == not_found
        history = call(ws, {"type": "channel_history", "channel": "ops"})
        assert history == {"type": "channel_history", "channel": "ops", "messages": []}


def test_an_unknown_frame_type_gets_the_real_hubs_error(hub):
    alice = hub.mint("alice")
    with ws_connect(hub) as ws:
        before = call(ws, {"type": "dance"})  # validation comes before identification, as there
        identify(ws, "alice", alice)
        after = call(ws, {"type": "dance", "steps": 3})
    for answer in (before, after):
        assert answer == {
            "type": "error",
            "error": "validation_failed",
            "message_type": "dance",
            "errors": [
                {
                    "field": "type",
                    "error": "unknown_message_type",
                    "detail": "unknown message type 'dance'",
                    "known_types": KNOWN,
                }
            ],
        }


def test_per_field_validation_errors_over_the_socket(hub):
    """Issue 21 item 4: `message` without payload was answered message_sent (delivering {}),
    `status` without status and `identify` without agent_id got unrelated errors."""
    alice, bob = hub.mint("alice"), hub.mint("bob")
    required = {"error": "required", "detail": "field is required"}

    def failed(message_type: str, *errors: dict[str, Any]) -> dict[str, Any]:
        return {"type": "error", "error": "validation_failed", "message_type": message_type, "errors": list(errors)}

    with ws_connect(hub) as ws:
        assert call(ws, {"type": "identify", "token": alice}) == failed("identify", {"field": "agent_id", **required})
        bad_capability = {"type": "identify", "agent_id": "alice", "token": alice, "capabilities": ["a", 5]}
        assert call(ws, bad_capability)["errors"] == [
            {"field": "capabilities[1]", "error": "wrong_type", "detail": "expected string, got integer", "value": 5}
        ]
        identify(ws, "alice", alice, client_type="sidecar", protocol_version=1)  # fields it does not know pass
        assert call(ws, {"type": "message", "to": "bob"}) == failed("message", {"field": "payload", **required})
        assert call(ws, {"type": "message", "to": "bob", "payload": "hi"})["errors"] == [
            {"field": "payload", "error": "wrong_type", "detail": "expected object, got string", "value": "hi"}
        ]
        assert call(ws, {"type": "status"})["errors"] == [{"field": "status", **required}]
        assert call(ws, {"type": "status", "status": "x" * 300})["errors"][0]["error"] == "too_long"
        not_object = {"field": "message", "error": "wrong_type", "detail": "expected JSON object"}
        assert call(ws, [1, 2]) == failed("unknown", not_object)
        ws.send("{not json")
        assert json.loads(ws.recv(timeout=30)) == {"type": "error", "error": "invalid_json"}
    assert hub.poll("bob", bob)["messages"] == [], "nothing was delivered"


def test_ten_validation_errors_within_a_minute_close_the_socket(hub):
    from websockets.exceptions import ConnectionClosed

    alice = hub.mint("alice")
    with ws_connect(hub) as ws:
        identify(ws, "alice", alice)
        for _ in range(9):
            assert call(ws, {"type": "status"})["error"] == "validation_failed"
        ws.send(json.dumps({"type": "status"}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "too many validation errors")


def test_a_message_frame_nested_too_deep_is_a_validation_error(hub):
    alice, bob = hub.mint("alice"), hub.mint("bob")
    with ws_connect(hub) as ws:
        identify(ws, "alice", alice)
        for depth in (150, 50_000):
            ws.send('{"type":"message","to":"bob","payload":{"a":' + "[" * depth + "]" * depth + "}}")
            answer = json.loads(ws.recv(timeout=30))
            assert answer["error"] == "validation_failed" and answer["errors"] == [
                {"field": "message", "error": "too_deep", "detail": "nested deeper than 100 levels"}
            ], depth
        assert call(ws, {"type": "message", "to": "bob", "payload": {"ok": True}})["type"] == "message_sent"
    assert [m["payload"] for m in hub.poll("bob", bob)["messages"]] == [{"ok": True}]


# broadcasts and two sockets under one id -------------------------------------------------------


def test_a_senders_own_broadcast_is_pushed_back_to_its_socket(hub):
    """Issue 21 item 5, over HTTP and over the socket; never stored for the sender."""
    alice, bob = hub.mint("alice"), hub.mint("bob")
    with ws_connect(hub) as ws:
        identify(ws, "alice", alice)
        by_http = hub.post(alice, {"payload": {"text": "all hands"}}).json()["id"]
        pushed = json.loads(ws.recv(timeout=30))
        assert (pushed["type"], pushed["id"], pushed["from"]) == ("message", by_http, "alice")
        sent = call(ws, {"type": "message", "payload": {"text": "again"}})
        assert sent["type"] == "message_sent"
        echoed = json.loads(ws.recv(timeout=30))
        assert (echoed["id"], echoed["payload"]) == (sent["id"], {"text": "again"})
    assert hub.poll("alice", alice)["messages"] == []
    assert len(hub.poll("bob", bob)["messages"]) == 2


def test_two_sockets_under_one_id_behave_as_on_the_real_hub(hub):
    """Issue 19 item 9: direct messages keep going to the first socket, broadcasts go to both;
    when the first closes the other gets agent_left, and (as there) the later socket does not
    take over direct messages: they are stored until a new connection identifies."""
    alice, bob = hub.mint("alice"), hub.mint("bob")
    with ws_connect(hub) as first, ws_connect(hub) as second:
        identify(first, "alice", alice)
        connected_at = listed(hub)[0]["connected_at"]
        time.sleep(0.01)  # a later connected_at (milliseconds)
        identify(second, "alice", alice, status="second")
        (entry,) = listed(hub)
        assert entry["status"] == "second" and entry["connected_at"] > connected_at, "the latest identify is listed"
        direct = hub.post(bob, {"to": "alice", "payload": {"n": 1}}).json()["id"]
        broadcast = hub.post(bob, {"payload": {"n": 2}}).json()["id"]
        assert [f.get("id") for f in frames_until_pong(first)] == [direct, broadcast]
        assert [f.get("id") for f in frames_until_pong(second)] == [broadcast]
        assert hub.poll("alice", alice)["messages"] == []
        first.close()
        left = eventually(lambda: [f for f in frames_until_pong(second) if f["type"] == "agent_left"], "agent_left")
        assert left == [{"type": "agent_left", "agent_id": "alice"}]
        assert listed(hub) == [], "the real hub forgets the agent when any of its sockets closes"
        later = hub.post(bob, {"to": "alice", "payload": {"n": 3}}).json()["id"]
        assert frames_until_pong(second) == []
        assert [m["id"] for m in hub.poll("alice", alice)["messages"]] == [later]


def test_agent_left_goes_out_once_per_closed_socket(hub):
    alice, bob = hub.mint("alice"), hub.mint("bob")
    with ws_connect(hub) as watcher:
        identify(watcher, "bob", bob)
        one, two = ws_connect(hub).__enter__(), ws_connect(hub).__enter__()
        identify(one, "alice", alice)
        identify(two, "alice", alice)
        joined = frames_until_pong(watcher)
        assert [f["type"] for f in joined] == ["agent_joined", "agent_joined"]
        left = [{"type": "agent_left", "agent_id": "alice"}]
        one.close()
        assert eventually(lambda: frames_until_pong(watcher), "agent_left") == left
        two.close()
        assert eventually(lambda: frames_until_pong(watcher), "agent_left") == left
        assert frames_until_pong(watcher) == []


def test_status_changes_reach_every_socket_the_senders_included(hub):
    alice, bob = hub.mint("alice"), hub.mint("bob")
    with ws_connect(hub) as a, ws_connect(hub) as b:
        identify(a, "alice", alice)
        identify(b, "bob", bob)
        frames_until_pong(a)
        assert call(a, {"type": "status", "status": "busy"}) == {"type": "status_updated"}
        for ws in (a, b):
            (changed,) = frames_until_pong(ws)
            assert changed["type"] == "status_changed" and changed["agent"]["status"] == "busy"
            assert set(changed["agent"]) == {"agent_id", "name", "status", "capabilities", "connected_at"}


# socket rate limits -----------------------------------------------------------------------------


def test_socket_messages_are_rate_limited_like_http_ones(hub_factory):
    """The real hub's socket buckets: a warning frame before the last tokens go, then a
    `rate_limited` frame and nothing sent. Burst 5 and a refill far too slow to matter."""
    hub = hub_factory("--rate-burst", "5", "--rate-limit", "0.001")
    alice, bob = hub.mint("alice"), hub.mint("bob")
    with ws_connect(hub) as ws:
        identify(ws, "alice", alice)
        for _ in range(4):
            assert call(ws, {"type": "message", "to": "bob", "payload": {}})["type"] == "message_sent"
        assert call(ws, {"type": "message", "to": "bob", "payload": {}}) == {
            "type": "rate_limit_warning",
            "tier": "normal",
            "remaining": 0,
            "capacity": 5,
        }
        assert json.loads(ws.recv(timeout=30))["type"] == "message_sent"
        refused = call(ws, {"type": "message", "to": "bob", "payload": {}})
        assert refused == {"type": "rate_limited", "retry_after_ms": 1_000_000, "tier": "normal"}
        assert call(ws, {"type": "ping"})["type"] == "pong", "pings are another tier"
    assert len(hub.poll("bob", bob)["messages"]) == 5
