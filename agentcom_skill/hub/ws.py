"""The local hub's WebSocket side (`GET /ws` on its HTTP port), with the real hub's frames.

While an agent is connected, its direct messages and the broadcasts it receives are pushed
to its socket and never stored in its mailbox (push model). The upgrade is done with the
`websockets` library's sans-I/O protocol on the socket `http.server` already accepted, so
HTTP and WebSocket share one port as on the real hub.

Presence follows the real hub's bookkeeping, because clients see its effects:
- direct messages to an agent go to its *first* open socket (a later socket under the same
  id does not take them over, not even once the first has closed: from then on they are
  stored, as for an agent that is not connected);
- broadcasts and presence events go to every identified socket, the sender's own included;
- `/api/agents` holds one entry per agent id (the details of its latest identify), removed
  when any socket of that agent closes; `agent_left` goes out once per closed socket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.sync.connection import Connection

from .limits import WS_TIERS, RateLimiter
from .schema import parse_json, validate_frame, wire_json

# As on the real hub: this many validation errors within a minute on one socket close it.
MAX_VIOLATIONS = 10
VIOLATION_WINDOW_S = 60.0
IDLE_CLOSE_CODE = 1002  # the real hub's close code for an idle socket, with an empty reason


def _now_ms() -> int:
    return int(time.time() * 1000)


class Peer:
    """One WebSocket connection; `send` is safe from any thread and never raises. Every frame
    in either direction counts as activity for the idle timer."""

    def __init__(self, connection: Any, clock: Callable[[], float] = time.monotonic):
        self.connection = connection
        self.clock = clock
        self.last_activity = clock()
        self._held: list[dict[str, Any]] | None = None
        self._hold_lock = threading.Lock()
        if hasattr(connection, "on_activity"):  # ours (see _connection_class): it reports what it receives
            connection.on_activity = self.touch

    def touch(self) -> None:
        self.last_activity = self.clock()

    def send(self, frame: dict[str, Any]) -> bool:
        with self._hold_lock:
            if self._held is not None:
                self._held.append(frame)
                return True
        return self.write(frame)

    def write(self, frame: dict[str, Any]) -> bool:
        """Send now, even while pushes are held."""
        try:
            self.connection.send(wire_json(frame))
        except Exception:  # a dead socket: the push is lost, as on the real hub
            return False
        self.touch()
        return True

    def hold(self) -> None:
        """Queue pushes until `release`: the answer to a frame goes out before what handling it
        pushed to this same socket (a sender's own broadcast), as on the real hub."""
        with self._hold_lock:
            self._held = []

    def release(self) -> None:
        with self._hold_lock:
            held, self._held = self._held or [], None
        for frame in held:
            self.write(frame)

    def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            self.connection.close(code, reason)
        except Exception:
            pass


class Presence:
    """Who is connected (see the module docstring for the rules); one lock around it all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listing: dict[str, dict[str, Any]] = {}  # agent id -> details of its latest identify
        self._first: dict[str, Peer] = {}  # agent id -> the socket its direct messages go to
        self._sockets: dict[Peer, str] = {}  # every identified socket -> its agent id

    def identify(self, peer: Peer, info: dict[str, Any]) -> None:
        agent_id = info["agent_id"]
        with self._lock:
            self._sockets[peer] = agent_id
            self._first.setdefault(agent_id, peer)
            self._listing[agent_id] = info

    def leave(self, peer: Peer) -> str | None:
        """Forget a socket; the agent id it was identified as, or None."""
        with self._lock:
            agent_id = self._sockets.pop(peer, None)
            if agent_id is None:
                return None
            if self._first.get(agent_id) is peer:
                del self._first[agent_id]
            self._listing.pop(agent_id, None)
            return agent_id

    def set_status(self, agent_id: str, status: str) -> dict[str, Any] | None:
        with self._lock:
            info = self._listing.get(agent_id)
            if info is None:
                return None
            info["status"] = status
            return dict(info)

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(info) for info in self._listing.values()]

    def count(self) -> int:
        with self._lock:
            return len(self._listing)

    def routes(self) -> tuple[dict[str, Peer], list[Peer]]:
        """(agent id -> the socket its direct messages go to, every identified socket)."""
        with self._lock:
            return dict(self._first), list(self._sockets)

    def identified_sockets(self) -> list[tuple[Peer, str]]:
        with self._lock:
            return list(self._sockets.items())

    def sockets(self, except_agent: str | None = None) -> list[Peer]:
        with self._lock:
            return [peer for peer, agent_id in self._sockets.items() if agent_id != except_agent]


class HubProtocol(ServerProtocol):
    """websockets' server side, answering a client's close as the real hub (Bandit) does:
    with the client's code and an empty reason (websockets would echo the reason too)."""

    def send_frame(self, frame: Frame) -> None:
        echo = frame.opcode is Opcode.CLOSE and self.close_rcvd is not None and self.close_sent is None
        if echo and frame.data and self.close_rcvd is not None:
            frame = Frame(Opcode.CLOSE, Close(self.close_rcvd.code, "").serialize())
        super().send_frame(frame)


def upgrade(handler: Any, max_size: int) -> Any | None:
    """Answer the upgrade request `handler` (an http.server handler) has read; the open
    connection, or None after refusing it."""
    lines = [handler.requestline] + [f"{k}: {v}" for k, v in handler.headers.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    protocol = HubProtocol(max_size=max_size)
    protocol.receive_data(raw)
    events = protocol.events_received()
    if not events or not isinstance(events[0], Request):
        return None
    response = protocol.accept(events[0])
    protocol.send_response(response)
    for data in protocol.data_to_send():
        handler.connection.sendall(data)
    if response.status_code != 101:
        return None
    # Frames are read straight from the socket: the client sent nothing after its request
    # (it waits for our 101), so http.server's read buffer holds nothing of them.
    handler.connection.settimeout(None)  # the idle timer below replaces the HTTP read timeout
    return _connection_class()(handler.connection, protocol, ping_interval=None, close_timeout=2)


_TrackedConnection: Any = None


def _connection_class() -> Any:
    """websockets' sync Connection, noting every frame it receives (control frames included)."""
    global _TrackedConnection
    if _TrackedConnection is None:

        class TrackedConnection(Connection):
            on_activity: Callable[[], None] = staticmethod(lambda: None)

            def process_event(self, event: Any) -> None:
                self.on_activity()
                super().process_event(event)

        _TrackedConnection = TrackedConnection
    return _TrackedConnection


@dataclass
class SocketContext:
    """What a socket needs from the hub around it."""

    agent_for_token: Callable[[str], str | None]
    deliver: Callable[[str, str | None, str, dict, str | None], str]
    presence: Presence
    idle_timeout: float
    log: Callable[[str], None]
    identify_timeout: float = 60.0  # a socket not identified by then is closed, whatever it sends
    limiter: RateLimiter | None = None
    answer_pings: bool = True  # off only to let tests play a half-dead connection
    clock: Callable[[], float] = time.monotonic  # injected by tests of the idle timer
    groups: Any = None  # the hub's channels and room (groups.HubGroups)


def serve_socket(connection: Any, context: SocketContext) -> None:
    """Run one connection until it closes or no frame went either way for `idle_timeout` s."""
    session = Session(connection, context)
    try:
        session.run()
    finally:
        session.leave()
        session.peer.close()


class Session:
    """One socket: its identity and the handlers of the frames a client sends."""

    def __init__(self, connection: Any, context: SocketContext):
        self.connection = connection
        self.context = context
        self.peer = Peer(connection, context.clock)
        self.agent_id: str | None = None
        self.violations: list[float] = []
        self.identify_by = context.clock() + context.identify_timeout

    def run(self) -> None:
        idle = self.context.idle_timeout
        while True:
            now = self.context.clock()
            left = self.peer.last_activity + idle - now
            if left <= 0:
                self.context.log(f"WS {self.agent_id or '-'} idle for {idle:g} s: closed")
                self.peer.close(IDLE_CLOSE_CODE, "")
                return
            if self.agent_id is None:
                if now >= self.identify_by:  # a thread each: sockets that never identify must not pile up
                    self.context.log(f"WS not identified within {self.context.identify_timeout:g} s: closed")
                    self.peer.close(IDLE_CLOSE_CODE, "")
                    return
                left = min(left, self.identify_by - now)
            try:
                raw = self.connection.recv(timeout=left)
            except TimeoutError:
                continue  # traffic the other way may have moved the deadline: look again
            except ConnectionClosed:
                return
            self.peer.touch()  # (the connection notes control frames too: see _connection_class)
            if self.handle(raw) == "close":
                return

    def handle(self, raw: Any) -> str | None:
        """Answer one text frame; "close" when the socket must be closed."""
        try:
            frame = parse_json(raw)
        except (ValueError, TypeError):
            self.reply({"type": "error", "error": "invalid_json"})
            return None
        errors = validate_frame(frame)
        if errors:
            return self.refuse(frame, errors)
        kind = frame["type"]
        if kind == "identify":
            return self.identify(frame) if self.allowed(kind) else None
        if self.agent_id is None:
            self.reply({"type": "error", "error": "not_identified"})
            return None
        if self.allowed(kind):
            FRAME_HANDLERS.get(kind, Session.ignore)(self, frame)
        return None

    def reply(self, frame: dict[str, Any]) -> None:
        self.peer.write(frame)

    def refuse(self, frame: Any, errors: list[dict[str, Any]]) -> str | None:
        """A validation error frame; too many of them within a minute close the socket."""
        now = self.context.clock()
        self.violations = [t for t in self.violations if now - t <= VIOLATION_WINDOW_S] + [now]
        if len(self.violations) >= MAX_VIOLATIONS:
            self.peer.close(1008, "too many validation errors")
            return "close"
        kind = frame.get("type", "unknown") if isinstance(frame, dict) else "unknown"
        self.reply({"type": "error", "error": "validation_failed", "message_type": kind, "errors": errors})
        return None

    def allowed(self, kind: str) -> bool:
        """The real hub's socket rate limits, once identified: a warning frame when the bucket
        runs low, a `rate_limited` frame (and nothing done) when it is empty."""
        limiter = self.context.limiter
        if limiter is None or self.agent_id is None:
            return True
        verdict = limiter.check(("ws", self.agent_id), WS_TIERS.get(kind, "normal"))
        if not verdict.allowed:
            self.reply({"type": "rate_limited", "retry_after_ms": verdict.retry_after_ms, "tier": verdict.tier})
        elif verdict.warn:
            self.reply(
                {
                    "type": "rate_limit_warning",
                    "tier": verdict.tier,
                    "remaining": verdict.remaining,
                    "capacity": verdict.capacity,
                }
            )
        return verdict.allowed

    # frames ---------------------------------------------------------------------------

    def identify(self, frame: dict[str, Any]) -> str | None:
        claimed = frame["agent_id"]
        owner = self.context.agent_for_token(frame["token"])
        if owner is None:
            self.reply({"type": "error", "error": "invalid_token"})
            return None
        if owner != claimed:
            self.reply({"type": "error", "error": "token_agent_mismatch"})
            return None
        if self.agent_id is not None and self.agent_id != owner:
            self.leave()  # identifying as someone else: the old identity leaves first
        self.agent_id = owner
        info = {
            "agent_id": owner,
            "name": frame.get("name", owner),
            "status": frame.get("status", "connected"),
            "capabilities": frame.get("capabilities", []),
            "connected_at": _now_ms(),
        }
        self.context.presence.identify(self.peer, info)
        if self.context.groups is not None:
            self.context.groups.identified(self.peer, owner)
        for other in self.context.presence.sockets(except_agent=owner):  # before the reply, as there
            other.send({"type": "agent_joined", "agent": public_agent(info)})
        self.reply({"type": "identified", "agent_id": owner})
        self.context.log(f"WS {owner} identified")
        return None

    def leave(self) -> None:
        agent_id = self.context.presence.leave(self.peer)
        if self.context.groups is not None:
            self.context.groups.left(self.peer)
        if agent_id is None:
            return
        self.context.log(f"WS {agent_id} disconnected")
        for other in self.context.presence.sockets():
            other.send({"type": "agent_left", "agent_id": agent_id})

    def ping(self, frame: dict[str, Any]) -> None:
        if self.context.answer_pings:
            self.reply({"type": "pong", "timestamp": _now_ms()})

    def message(self, frame: dict[str, Any]) -> None:
        assert self.agent_id is not None
        type_ = frame.get("message_type")
        self.peer.hold()
        try:
            msg_id = self.context.deliver(
                self.agent_id,
                frame.get("to"),
                "chat" if type_ is None else type_,
                frame["payload"],
                frame.get("reply_to"),
            )
            self.reply({"type": "message_sent", "id": msg_id})
        finally:
            self.peer.release()

    def status(self, frame: dict[str, Any]) -> None:
        assert self.agent_id is not None
        info = self.context.presence.set_status(self.agent_id, frame["status"])
        self.reply({"type": "status_updated"})
        if info is not None:  # no entry any more (another socket of ours closed): nobody is told
            for peer in self.context.presence.sockets():
                peer.send({"type": "status_changed", "agent": public_agent(info)})

    def list_agents(self, frame: dict[str, Any]) -> None:
        self.reply({"type": "agents", "agents": [public_agent(a) for a in self.context.presence.listing()]})

    def group_frame(self, frame: dict[str, Any]) -> None:
        """A channel frame, handled by the hub's groups (hub/groups.py)."""
        handler = getattr(self.context.groups, GROUP_FRAMES[frame["type"]], None)
        if handler is None:
            self.reply({"type": "error", "error": "channel_not_found"})
        else:
            handler(self, frame)

    def ignore(self, frame: dict[str, Any]) -> None:
        """A type the real hub knows and the local hub does not implement (task and resource
        reports of the hub's own sidecar): accepted silently."""


GROUP_FRAMES = {
    "list_channels": "frame_list",
    "channel_subscribe": "frame_subscribe",
    "channel_unsubscribe": "frame_unsubscribe",
    "channel_publish": "frame_publish",
    "channel_history": "frame_history",
}

FRAME_HANDLERS: dict[str, Callable[[Session, dict[str, Any]], None]] = {
    "ping": Session.ping,
    "message": Session.message,
    "status": Session.status,
    "list_agents": Session.list_agents,
    **{kind: Session.group_frame for kind in GROUP_FRAMES},
}


def public_agent(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info.get(k) for k in ("agent_id", "name", "status", "capabilities", "connected_at")}
