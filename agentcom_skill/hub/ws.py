"""The local hub's WebSocket side (`GET /ws` on its HTTP port), with the real hub's frames.

While an agent is connected, its direct messages and the broadcasts it receives are pushed
to its socket and never stored in its mailbox (protocol part 1, push model). The upgrade
is done with the `websockets` library's sans-I/O protocol on the socket `http.server`
already accepted, so HTTP and WebSocket share one port as on the real hub.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable

KNOWN_TYPES = ["identify", "message", "status", "ping", "list_agents"]


class Presence:
    """Connected agents and their sockets; one lock around both."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._agents: dict[str, tuple[dict[str, Any], "Peer"]] = {}

    def join(self, info: dict[str, Any], peer: "Peer") -> None:
        """Register; a later connection of the same agent takes its place."""
        with self._lock:
            self._agents[info["agent_id"]] = (info, peer)

    def leave(self, agent_id: str, peer: "Peer") -> bool:
        with self._lock:
            current = self._agents.get(agent_id)
            if current is None or current[1] is not peer:
                return False
            del self._agents[agent_id]
            return True

    def set_status(self, agent_id: str, status: str) -> dict[str, Any] | None:
        with self._lock:
            if agent_id not in self._agents:
                return None
            self._agents[agent_id][0]["status"] = status
            return dict(self._agents[agent_id][0])

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(info) for info, _ in self._agents.values()]

    def peers(self) -> dict[str, "Peer"]:
        with self._lock:
            return {agent_id: peer for agent_id, (_, peer) in self._agents.items()}

    def count(self) -> int:
        with self._lock:
            return len(self._agents)


class Peer:
    """One WebSocket connection; `send` is safe from any thread and never raises."""

    def __init__(self, connection: Any):
        self.connection = connection

    def send(self, frame: dict[str, Any]) -> bool:
        try:
            self.connection.send(json.dumps(frame, separators=(",", ":")))
            return True
        except Exception:  # a dead socket: the push is lost, as on the real hub
            return False

    def close(self) -> None:
        try:
            self.connection.close()
        except Exception:
            pass


def upgrade(handler: Any) -> Any | None:
    """Answer the upgrade request `handler` (an http.server handler) has read; the open
    connection, or None after refusing it."""
    from websockets.server import ServerProtocol
    from websockets.sync.connection import Connection

    lines = [handler.requestline] + [f"{k}: {v}" for k, v in handler.headers.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    protocol = ServerProtocol(max_size=8 * 1024 * 1024)
    protocol.receive_data(raw)
    events = protocol.events_received()
    if not events:
        return None
    response = protocol.accept(events[0])
    protocol.send_response(response)
    for data in protocol.data_to_send():
        handler.connection.sendall(data)
    if response.status_code != 101:
        return None
    # Frames are read straight from the socket: the client sent nothing after its request
    # (it waits for our 101), so http.server's read buffer holds nothing of them.
    return Connection(handler.connection, protocol, ping_interval=None, close_timeout=2)


def serve_socket(
    connection: Any,
    *,
    agent_for_token: Callable[[str], str | None],
    deliver: Callable[[str, str | None, str, dict, str | None], str],
    presence: Presence,
    idle_timeout: float,
    log: Callable[[str], None],
    answer_pings: bool = True,
) -> None:
    """Run one connection until it closes or stays idle for `idle_timeout` seconds."""
    from websockets.exceptions import ConnectionClosed

    peer = Peer(connection)
    agent_id: str | None = None
    try:
        while True:
            try:
                raw = connection.recv(timeout=idle_timeout)
            except TimeoutError:
                log(f"WS {agent_id or '-'} idle for {idle_timeout:g} s: closed")
                break
            except ConnectionClosed:
                break
            try:
                frame = json.loads(raw)
            except (ValueError, TypeError):
                peer.send({"type": "error", "error": "invalid_json"})
                continue
            if not isinstance(frame, dict):
                peer.send({"type": "error", "error": "invalid_json"})
                continue
            kind = frame.get("type")
            if kind == "identify":
                claimed = frame.get("agent_id")
                owner = agent_for_token(frame["token"]) if isinstance(frame.get("token"), str) else None
                if owner is None:
                    peer.send({"type": "error", "error": "invalid_token"})
                    continue
                if owner != claimed:
                    peer.send({"type": "error", "error": "token_agent_mismatch"})
                    continue
                if agent_id is not None and agent_id != owner:
                    presence.leave(agent_id, peer)
                agent_id = owner
                info = {
                    "agent_id": owner,
                    "name": frame.get("name") if isinstance(frame.get("name"), str) else owner,
                    "status": frame.get("status") if isinstance(frame.get("status"), str) else "connected",
                    "capabilities": [c for c in frame.get("capabilities") or [] if isinstance(c, str)] if isinstance(frame.get("capabilities"), list) else [],
                    "connected_at": int(time.time() * 1000),
                    "fsm_state": "idle",
                    "client_type": frame.get("client_type") if isinstance(frame.get("client_type"), str) else None,
                }
                # A second connection under the same id takes over the agent's pushes; the first
                # stays open but hears nothing more (the hazard `agentcom watch` reports).
                presence.join(info, peer)
                peer.send({"type": "identified", "agent_id": owner})
                log(f"WS {owner} identified")
                for other_id, other in presence.peers().items():
                    if other_id != owner:
                        other.send({"type": "agent_joined", "agent": _public(info)})
                continue
            if agent_id is None:
                peer.send({"type": "error", "error": "not_identified"})
                continue
            if kind == "ping":
                if answer_pings:  # off only to let tests play a half-dead connection
                    peer.send({"type": "pong", "timestamp": int(time.time() * 1000)})
            elif kind == "message":
                payload = frame.get("payload", {})
                if not isinstance(payload, dict):
                    peer.send({"type": "error", "error": "validation_failed", "errors": [{"field": "payload", "error": "must be an object"}]})
                    continue
                to = frame.get("to") if isinstance(frame.get("to"), str) else None
                type_ = frame.get("message_type") if isinstance(frame.get("message_type"), str) else "chat"
                reply_to = frame.get("reply_to") if isinstance(frame.get("reply_to"), str) else None
                peer.send({"type": "message_sent", "id": deliver(agent_id, to, type_, payload, reply_to)})
            elif kind == "status" and isinstance(frame.get("status"), str):
                info = presence.set_status(agent_id, frame["status"])
                peer.send({"type": "status_updated"})
                if info is not None:
                    for other in presence.peers().values():
                        other.send({"type": "status_changed", "agent": _public(info)})
            elif kind == "list_agents":
                peer.send({"type": "agents", "agents": [_public(a) for a in presence.list()]})
            else:
                peer.send({"type": "error", "error": "validation_failed", "detail": "unknown frame type", "known_types": KNOWN_TYPES})
    finally:
        if agent_id is not None and presence.leave(agent_id, peer):
            log(f"WS {agent_id} disconnected")
            for other in presence.peers().values():
                other.send({"type": "agent_left", "agent_id": agent_id})
        peer.close()


def _public(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info.get(k) for k in ("agent_id", "name", "status", "capabilities", "connected_at")}
