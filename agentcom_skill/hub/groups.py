"""The local hub's group conversations, as the real hub has them: channels and the room.

Channels (`AgentCom.Channels` on the real hub) are kept in the hub's database and survive a
restart: a name normalised (leading `#` stripped, lower case, only `a-z0-9-_` kept), a
description, the subscribers (newest first), and the last 200 messages published, each with
the channel's own seq. A published message is put into every *other* subscriber's mailbox with
`payload.channel` set and `to` null (whether they are connected or not), and pushed as a
`channel_message` frame (its payload without `channel`, the same id) to every socket listening
to the channel but the sender's. A socket listens to the channels its agent had subscribed to
when it identified, plus those it subscribes to with a `channel_subscribe` frame; subscribing
or unsubscribing over HTTP does not change what an open socket listens to (real-hub quirk).

The room (`AgentCom.Room`) is one chat for agents and people, kept in memory: a ring of the
last 500 messages `{seq, from, text, type, timestamp}`, no id, seq starting again at 1 when
the hub restarts. `/human` posts under any name. Every identified socket but the sender's
gets a `room_message` frame. `GET /api/room/messages?since=N&limit=L` gives the *newest* L
(default 50) with a seq above N, in ascending order (real-hub quirk).
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .schema import Answered

if TYPE_CHECKING:
    from .store import HubStore
    from .ws import Peer, Presence, Session

HISTORY_CAP = 200  # messages kept per channel
ROOM_RING = 500  # room messages kept in memory
DEFAULT_LIMIT = 50  # history and room reads without a limit

SCHEMA = """
CREATE TABLE IF NOT EXISTS hub_channels (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    subscribers TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hub_channel_history (
    channel TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message TEXT NOT NULL,
    stored_at INTEGER NOT NULL,
    PRIMARY KEY (channel, seq)
);
"""

_NOT_NAME = re.compile(r"[^a-z0-9\-_]")


def normalize(name: str) -> str:
    """The real hub's `Channels.normalize`: every leading `#` stripped, lower case, and every
    character but `a-z0-9-_` removed."""
    return _NOT_NAME.sub("", name.lstrip("#").lower())


def take(items: list[Any], n: int) -> list[Any]:
    """Elixir's `Enum.take`: the first n, or for a negative n the last -n."""
    return items[:n] if n >= 0 else items[n:] if -n < len(items) else list(items)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Channels:
    """Channels and their histories, in the hub's database (its own connection and lock)."""

    def __init__(self, path: Any):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _subscribers(self, name: str) -> list[str] | None:
        row = self._db.execute("SELECT subscribers FROM hub_channels WHERE name = ?", (name,)).fetchone()
        return None if row is None else list(json.loads(row[0]))

    def create(self, name: str, description: str, created_by: str) -> bool:
        with self._lock:
            try:
                row = (normalize(name), description, _now_ms(), created_by)
                self._db.execute("INSERT INTO hub_channels VALUES (?, ?, ?, ?, '[]')", row)
            except sqlite3.IntegrityError:
                return False
        return True

    def subscribe(self, channel: str, agent_id: str) -> str:
        """ "ok", "already_subscribed" or "not_found"."""
        name = normalize(channel)
        with self._lock:
            subscribers = self._subscribers(name)
            if subscribers is None:
                return "not_found"
            if agent_id in subscribers:
                return "already_subscribed"
            self._db.execute(
                "UPDATE hub_channels SET subscribers = ? WHERE name = ?", (json.dumps([agent_id, *subscribers]), name)
            )
        return "ok"

    def unsubscribe(self, channel: str, agent_id: str) -> bool:
        """False when there is no such channel (leaving one never joined is fine)."""
        name = normalize(channel)
        with self._lock:
            subscribers = self._subscribers(name)
            if subscribers is None:
                return False
            if agent_id in subscribers:
                subscribers.remove(agent_id)
                row = (json.dumps(subscribers), name)
                self._db.execute("UPDATE hub_channels SET subscribers = ? WHERE name = ?", row)
        return True

    def publish(self, channel: str, message: dict[str, Any]) -> tuple[int, list[str]] | None:
        """Keep `message` in the channel's history: (its seq there, the subscribers), or None."""
        name = normalize(channel)
        with self._lock:
            subscribers = self._subscribers(name)
            if subscribers is None:
                return None
            row = self._db.execute("SELECT MAX(seq) FROM hub_channel_history WHERE channel = ?", (name,)).fetchone()
            seq = (row[0] or 0) + 1
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO hub_channel_history VALUES (?, ?, ?, ?)", (name, seq, json.dumps(message), _now_ms())
                )
                self._db.execute(
                    "DELETE FROM hub_channel_history WHERE channel = ? AND seq <= ?", (name, seq - HISTORY_CAP)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return seq, subscribers

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, description, subscribers, created_at FROM hub_channels ORDER BY name"
            ).fetchall()
        return [
            {"created_at": r[3], "description": r[1], "name": r[0], "subscriber_count": len(json.loads(r[2]))}
            for r in rows
        ]

    def info(self, channel: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, description, created_at, created_by, subscribers FROM hub_channels WHERE name = ?",
                (normalize(channel),),
            ).fetchone()
        if row is None:
            return None
        subscribers = json.loads(row[4])
        return {
            "created_at": row[2],
            "created_by": row[3],
            "description": row[1],
            "name": row[0],
            "subscriber_count": len(subscribers),
            "subscribers": subscribers,
        }

    def history(self, channel: str, since: int, limit: int) -> list[dict[str, Any]]:
        """The last `limit` kept after `since`, ascending (a negative limit: the first -limit)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, message, stored_at FROM hub_channel_history WHERE channel = ? AND seq > ? ORDER BY seq",
                (normalize(channel), since),
            ).fetchall()
        entries = [{"message": json.loads(r[1]), "seq": r[0], "stored_at": r[2]} for r in rows]
        return take(entries, -limit)

    def subscriptions(self, agent_id: str) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT name, subscribers FROM hub_channels ORDER BY name").fetchall()
        return [name for name, subscribers in rows if agent_id in json.loads(subscribers)]


class Room:
    """The room: a ring of the last ROOM_RING messages, in memory only."""

    def __init__(self, clock: Callable[[], int] = _now_ms):
        self._lock = threading.Lock()
        self._ring: deque[dict[str, Any]] = deque(maxlen=ROOM_RING)  # oldest first
        self._seq = 0
        self._participants: set[str] = set()
        self.clock = clock

    def post(self, sender: str, text: str, type_: Any) -> dict[str, Any]:
        with self._lock:
            self._seq += 1
            message = {"from": sender, "seq": self._seq, "text": text, "timestamp": self.clock(), "type": type_}
            self._ring.append(message)
            self._participants.add(sender)
        return message

    def messages(self, since: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """(the newest `limit` with a seq above `since`, ascending; the room's last seq)."""
        with self._lock:
            newest_first = [m for m in reversed(self._ring) if m["seq"] > since]
            return list(reversed(take(newest_first, limit))), self._seq

    def participants(self) -> list[str]:
        with self._lock:
            return sorted(self._participants)


class HubGroups:
    """Channels and the room of one hub, and which sockets listen to which channel."""

    def __init__(self, store: HubStore, presence: Presence):
        self.store = store
        self.presence = presence
        self.channels = Channels(store.path)
        self.room = Room()
        self._lock = threading.Lock()
        self._listening: dict[Peer, set[str]] = {}  # socket -> normalised channel names

    def close(self) -> None:
        self.channels.close()

    # sockets ----------------------------------------------------------------------------

    def identified(self, peer: Peer, agent_id: str) -> None:
        names = self.channels.subscriptions(agent_id)
        with self._lock:
            self._listening.setdefault(peer, set()).update(names)

    def left(self, peer: Peer) -> None:
        with self._lock:
            self._listening.pop(peer, None)

    def _listen(self, peer: Peer, channel: str, on: bool) -> None:
        with self._lock:
            names = self._listening.setdefault(peer, set())
            (names.add if on else names.discard)(normalize(channel))

    def _listeners(self, name: str) -> list[Peer]:
        with self._lock:
            return [peer for peer, names in self._listening.items() if name in names]

    # actions ----------------------------------------------------------------------------

    def subscribe(self, channel: str, agent_id: str) -> str:
        outcome = self.channels.subscribe(channel, agent_id)
        if outcome == "ok":
            name = normalize(channel)
            agents = dict((peer, agent) for agent, peer in self._socket_agents())
            for peer in self._listeners(name):
                if agents.get(peer) not in (None, agent_id):
                    peer.send({"type": "channel_agent_joined", "channel": name, "agent_id": agent_id})
        return outcome

    def _socket_agents(self) -> list[tuple[str, Peer]]:
        return [(agent, peer) for peer, agent in self.presence.identified_sockets()]

    def publish(
        self, sender: str, channel: str, type_: str, payload: dict[str, Any], reply_to: str | None
    ) -> tuple[int, str] | None:
        """(the seq in the channel's history, the message id), or None for no such channel."""
        msg_id = secrets.token_hex(8)
        now = _now_ms()
        message = {
            "from": sender,
            "id": msg_id,
            "payload": payload,
            "reply_to": reply_to,
            "timestamp": now,
            "to": None,
            "type": type_,
        }
        published = self.channels.publish(channel, message)
        if published is None:
            return None
        seq, subscribers = published
        name = normalize(channel)
        recipients = [agent for agent in subscribers if agent != sender]
        if recipients:
            self.store.enqueue(recipients, msg_id, sender, None, type_, {**payload, "channel": name}, reply_to, now)
        frame = {
            "type": "channel_message",
            "channel": name,
            "id": msg_id,
            "from": sender,
            "message_type": type_,
            "payload": payload,
            "reply_to": reply_to,
            "timestamp": now,
        }
        agents = {peer: agent for agent, peer in self._socket_agents()}
        for peer in self._listeners(name):
            if agents.get(peer, sender) != sender:
                peer.send(frame)
        return seq, msg_id

    def room_post(self, sender: str, text: str, type_: Any) -> dict[str, Any]:
        message = self.room.post(sender, text, type_)
        frame = {
            "type": "room_message",
            "from": sender,
            "text": text,
            "seq": message["seq"],
            "message_type": type_,
            "timestamp": message["timestamp"],
        }
        for agent, peer in self._socket_agents():
            if agent != sender:
                peer.send(frame)
        return message

    # socket frames ----------------------------------------------------------------------

    def frame_subscribe(self, session: Session, frame: dict[str, Any]) -> None:
        assert session.agent_id is not None
        channel = frame["channel"]
        outcome = self.subscribe(channel, session.agent_id)
        if outcome == "ok":
            self._listen(session.peer, channel, True)
            session.reply({"type": "channel_subscribed", "channel": channel})
        elif outcome == "already_subscribed":
            session.reply({"type": "channel_subscribed", "channel": channel, "note": "already_subscribed"})
        else:
            session.reply({"type": "error", "error": "channel_not_found"})

    def frame_unsubscribe(self, session: Session, frame: dict[str, Any]) -> None:
        assert session.agent_id is not None
        channel = frame["channel"]
        if self.channels.unsubscribe(channel, session.agent_id):
            self._listen(session.peer, channel, False)
            session.reply({"type": "channel_unsubscribed", "channel": channel})
        else:
            session.reply({"type": "error", "error": "channel_not_found"})

    def frame_publish(self, session: Session, frame: dict[str, Any]) -> None:
        assert session.agent_id is not None
        channel = frame["channel"]
        type_ = frame.get("message_type")
        published = self.publish(
            session.agent_id, channel, "chat" if type_ is None else type_, frame["payload"], frame.get("reply_to")
        )
        if published is None:
            session.reply({"type": "error", "error": "channel_not_found"})
        else:
            seq, msg_id = published
            session.reply({"type": "channel_published", "channel": channel, "seq": seq, "id": msg_id})

    def frame_history(self, session: Session, frame: dict[str, Any]) -> None:
        channel = frame["channel"]
        limit = frame.get("limit")
        since = frame.get("since")
        messages = self.channels.history(
            channel, 0 if since is None else since, DEFAULT_LIMIT if limit is None else limit
        )
        session.reply({"type": "channel_history", "channel": channel, "messages": messages})

    def frame_list(self, session: Session, frame: dict[str, Any]) -> None:
        session.reply({"type": "channels", "channels": self.channels.listing()})


# HTTP ------------------------------------------------------------------------------------


class _BadInteger(Exception):
    """A query parameter that is not an integer: the real hub's request crashes (500)."""


def _int_param(path: str, name: str, default: int) -> int:
    values = parse_qs(urlsplit(path).query).get(name)
    if not values:
        return default
    try:
        return int(values[0])
    except ValueError:
        raise _BadInteger(name) from None


def http_route(handler: Any, groups: HubGroups, method: str, parts: list[str]) -> Callable[[], None] | None:
    """The handler of a channel or room route, or None. `handler` is the hub's request handler
    (its `_respond`, `_json_body`, `_bearer_agent`, `_rate_limited`, `_invalid`)."""
    if parts[:2] == ["api", "channels"]:
        rest = parts[2:]
        if not rest:
            routes = {"GET": lambda: _list_channels(handler, groups), "POST": lambda: _create(handler, groups)}
            return routes.get(method)
        if len(rest) == 1 and method == "GET":
            return lambda: _channel_info(handler, groups, rest[0])
        if len(rest) == 2:
            name, action = rest
            if method == "GET" and action == "history":
                return lambda: _history(handler, groups, name)
            if method == "POST" and action in ("subscribe", "unsubscribe", "publish"):
                return lambda: _channel_action(handler, groups, name, action)
        return None
    if len(parts) == 4 and parts[:2] == ["api", "agents"] and parts[3] == "subscriptions" and method == "GET":
        return lambda: handler._respond(
            200, {"agent_id": parts[2], "channels": groups.channels.subscriptions(parts[2])}
        )
    if parts[:2] == ["api", "room"]:
        route = "/".join(parts[2:])
        if method == "POST" and route in ("message", "message/human"):
            return lambda: _room_post(handler, groups, human=route == "message/human")
        if method == "GET" and route == "messages":
            return lambda: _room_messages(handler, groups)
        if method == "GET" and route == "participants":
            return lambda: handler._respond(200, {"participants": groups.room.participants()})
    return None


_UNAUTHORIZED = {"error": "unauthorized", "hint": "provide Authorization: Bearer <token>"}


def _ip(handler: Any) -> str:
    return f"ip:{handler.client_address[0]}"


def _authed_body(handler: Any) -> tuple[str, Any] | None:
    """(the agent, the body) of an authenticated POST, or None once answered."""
    body = handler._json_body()
    if body is Answered:
        return None
    agent = handler._bearer_agent()
    if agent is None:
        handler._respond(401, _UNAUTHORIZED)
        return None
    return agent, body if isinstance(body, dict) else {}


def _list_channels(handler: Any, groups: HubGroups) -> None:
    if not handler._rate_limited(("http", _ip(handler)), "light"):
        handler._respond(200, {"channels": groups.channels.listing()})


def _create(handler: Any, groups: HubGroups) -> None:
    authed = _authed_body(handler)
    if authed is None:
        return
    agent, body = authed
    if handler._rate_limited(("http", agent), "heavy") or handler._invalid("post_channel", body):
        return
    description = body.get("description") or ""
    if groups.channels.create(body["name"], description, agent):
        handler._respond(201, {"status": "created", "channel": body["name"]})
    else:
        handler._respond(409, {"error": "channel_exists"})


def _channel_info(handler: Any, groups: HubGroups, channel: str) -> None:
    if handler._rate_limited(("http", _ip(handler)), "normal"):
        return
    info = groups.channels.info(channel)
    handler._respond(*((200, info) if info is not None else (404, {"error": "channel_not_found"})))


def _channel_action(handler: Any, groups: HubGroups, channel: str, action: str) -> None:
    authed = _authed_body(handler)
    if authed is None:
        return
    agent, body = authed
    if handler._rate_limited(("http", agent), "normal"):
        return
    not_found = (404, {"error": "channel_not_found"})
    if action == "subscribe":
        outcome = groups.subscribe(channel, agent)
        answers = {
            "ok": (200, {"status": "subscribed", "channel": channel}),
            "already_subscribed": (200, {"status": "already_subscribed"}),
        }
        handler._respond(*answers.get(outcome, not_found))
    elif action == "unsubscribe":
        found = groups.channels.unsubscribe(channel, agent)
        handler._respond(*((200, {"status": "unsubscribed", "channel": channel}) if found else not_found))
    elif not handler._invalid("post_channel_publish", body):
        type_ = body.get("type")
        published = groups.publish(
            agent, channel, "chat" if type_ is None else type_, body["payload"], body.get("reply_to")
        )
        handler._respond(*((200, {"status": "published", "seq": published[0]}) if published else not_found))


def _history(handler: Any, groups: HubGroups, channel: str) -> None:
    try:
        limit = _int_param(handler.path, "limit", DEFAULT_LIMIT)
        since = _int_param(handler.path, "since", 0)
    except _BadInteger:
        handler._respond(500, close=True)
        return
    messages = groups.channels.history(channel, since, limit)
    handler._respond(200, {"channel": channel, "count": len(messages), "messages": messages})


def _room_post(handler: Any, groups: HubGroups, human: bool) -> None:
    authed = _authed_body(handler)
    if authed is None:
        return
    agent, body = authed
    text = body.get("text")
    type_ = body.get("type")
    type_ = "chat" if type_ is None or type_ is False else type_  # Elixir's `||`
    sender = body.get("from") if human else agent
    if not (isinstance(text, str) and text and isinstance(sender, str) and sender):
        handler._respond(422, {"error": "from and text are required" if human else "text is required"})
        return
    handler._respond(201, groups.room_post(sender, text, type_))


def _room_messages(handler: Any, groups: HubGroups) -> None:
    try:
        since = _int_param(handler.path, "since", 0)
        limit = _int_param(handler.path, "limit", DEFAULT_LIMIT)
    except _BadInteger:
        handler._respond(500, close=True)
        return
    messages, last_seq = groups.room.messages(since, limit)
    handler._respond(200, {"last_seq": last_seq, "messages": messages})
