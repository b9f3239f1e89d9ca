"""Channels and the room, the pure part of the client side (no I/O): addresses, room messages
and pushed channel frames as `Message`s, and how a read of the room continues the last one.

Addresses, one convention everywhere: `#name` is a channel (normalised as the hub does),
`@room` the room, `broadcast` everyone, anything else an agent id.

A room message has no id and a seq that starts again when the hub restarts, so it is kept
under a key of its own: 16 hex digits of a digest of its seq, timestamp, sender, text and
type (the same message read by a poll and pushed over the socket gets the same key). It
becomes a `Message` with no seq, `to` "@room", and a payload `{"text", "room_seq"}` (plus
`room_type` when its type is not a string). Its `from` is only claimed: the hub lets anyone
post under any name.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from .errors import HubProtocolError, UsageError
from .message import ROOM, Message, Unreadable, _is_int, _unreadable, parse_message

ROOM_RING = 500  # the hub keeps the last 500 room messages: a read of this many misses none
_NOT_NAME = r"[^a-z0-9\-_]"  # (a pattern, compiled and cached by re when first used)


def normalise_channel(name: str) -> str:
    """The hub's normalisation: every leading `#` stripped, lower case, only `a-z0-9-_`."""
    return re.sub(_NOT_NAME, "", name.lstrip("#").lower())


class Address(NamedTuple):
    kind: str  # channel | room | broadcast | agent
    name: str  # "#research", "@room", "broadcast" or the agent id

    @property
    def channel(self) -> str:
        """The channel's name as the hub's paths take it (without `#`)."""
        return self.name[1:]


def parse_address(to: Any) -> Address:
    """Where a message goes, from what a user wrote (UsageError for nothing usable)."""
    if not isinstance(to, str) or not to.strip():
        raise UsageError("to must be an agent id, 'broadcast', '#channel' or '@room'")
    to = to.strip()
    if to.startswith("#"):
        name = normalise_channel(to)
        if not name:
            raise UsageError(f"{to[:40]!r} is no channel name: a channel is '#' and letters, digits, '-' or '_'")
        return Address("channel", "#" + name)
    if to.casefold() == ROOM:
        return Address("room", ROOM)
    if to.casefold() == "broadcast":
        return Address("broadcast", "broadcast")
    return Address("agent", to)


def group_address(to: Any) -> Address:
    """A channel or the room (for join and leave)."""
    address = parse_address(to)
    if address.kind not in ("channel", "room"):
        raise UsageError(f"{str(to)[:40]!r} is neither a channel ('#name') nor the room ('@room')")
    return address


def room_key(raw: dict[str, Any]) -> str:
    import hashlib  # late: only a reader of the room needs it (every check imports this module)

    canonical = json.dumps(
        [raw.get("seq"), raw.get("timestamp"), raw.get("from"), raw.get("text"), raw.get("type")],
        separators=(",", ":"),
        ensure_ascii=True,
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def room_message(raw: Any) -> Message:
    """One room message (from `GET /api/room/messages` or a `room_message` frame, whose
    `message_type` is the type) as a `Message`; HubProtocolError when it cannot be read."""
    if not isinstance(raw, dict):
        raise HubProtocolError("hub sent a room message that is not an object")
    seq = raw.get("seq")
    if not _is_int(seq):
        raise HubProtocolError("hub sent a room message whose seq is not an integer")
    sender, text = raw.get("from"), raw.get("text")
    if not isinstance(sender, str) or not sender or not isinstance(text, str):
        raise HubProtocolError(f"hub sent room message seq {seq} without a string 'from' and 'text'")
    type_ = raw.get("type")
    payload: dict[str, Any] = {"text": text, "room_seq": seq}
    if type_ is not None and not isinstance(type_, str):
        payload["room_type"] = type_
    entry = parse_message(
        {
            "seq": seq,
            "id": room_key(raw),
            "from": sender,
            "to": ROOM,
            "type": type_ if isinstance(type_, str) and type_ else "chat",
            "payload": payload,
            "timestamp": raw.get("timestamp"),
        }
    )
    return entry._replace(seq=None)


def room_frame_message(frame: dict[str, Any]) -> Message:
    """A pushed `room_message` frame (its type under `message_type`)."""
    raw = {k: frame.get(k) for k in ("seq", "from", "text", "timestamp")}
    raw["type"] = frame.get("message_type")
    return room_message(raw)


def channel_frame_message(frame: dict[str, Any]) -> Message:
    """A pushed `channel_message` frame as the message its mailbox copy is: the same id, `to`
    null and `payload.channel` set (the frame carries the channel beside the payload)."""
    channel = frame.get("channel")
    payload = frame.get("payload")
    if not isinstance(channel, str) or not isinstance(payload, dict):
        raise HubProtocolError("hub pushed a channel message without a string 'channel' and an object payload")
    return parse_message(
        {
            "seq": 0,
            "id": frame.get("id"),
            "from": frame.get("from"),
            "to": None,
            "type": frame.get("message_type"),
            "payload": {**payload, "channel": channel},
            "reply_to": frame.get("reply_to"),
            "timestamp": frame.get("timestamp"),
        }
    )._replace(seq=None)


def pushed_group_message(frame: dict[str, Any], raw: str | bytes, problem: str | None = None) -> Message | Unreadable:
    """A pushed `channel_message` or `room_message` frame as a `Message`, or, when it cannot
    be read, as `Unreadable` (kept for a person, as a pushed message is)."""
    if problem is None:
        try:
            if frame.get("type") == "room_message":
                return room_frame_message(frame)
            return channel_frame_message(frame)
        except HubProtocolError as exc:
            problem = str(exc).removeprefix("hub sent ").removeprefix("hub pushed ")
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return _unreadable({"id": frame.get("id"), "from": frame.get("from")}, problem, text)  # (a room seq is no seq)


def group_of(frame: dict[str, Any]) -> str | None:
    """Where a pushed `channel_message` or `room_message` frame was said: "#name" or "@room"."""
    if frame.get("type") == "room_message":
        return ROOM
    channel = frame.get("channel")
    return "#" + channel if isinstance(channel, str) else None


def room_seq(msg: Message) -> int:
    seq = msg.payload.get("room_seq")
    return seq if isinstance(seq, int) else 0


class RoomRead(NamedTuple):
    """What one read of the room brings: the messages new since the cursor, the next cursor
    (the newest seq read, and that message's key), warnings; `again` True: the seq went back
    (a hub restart), read again from the start."""

    messages: list[Message]
    cursor: int
    cursor_key: str | None
    warnings: list[str]
    again: bool = False


def room_since(cursor: int) -> int:
    """Read from one before the cursor: the message at the cursor comes back, and its key
    says whether the hub's seq still counts on from ours."""
    return max(cursor - 1, 0)


def plan_room_read(
    messages: list[Message], last_seq: Any, cursor: int, cursor_key: str | None, from_start: bool = False
) -> RoomRead:
    """Continue a read of the room (pure). `messages` are what the hub returned for
    `room_since(cursor)` (or for 0, `from_start`), in ascending seq."""
    warnings: list[str] = []
    hub_last = last_seq if _is_int(last_seq) else 0
    new = messages
    if cursor and not from_start:
        anchor = next((m for m in messages if room_seq(m) == cursor), None)
        if anchor is not None and anchor.id == cursor_key:
            new = [m for m in messages if room_seq(m) > cursor]
        elif anchor is not None or hub_last < cursor:
            return RoomRead([], cursor, cursor_key, [], again=True)
        else:
            warnings.append(
                f"room messages after seq {cursor} may be lost: the hub keeps only the last {ROOM_RING}, or it"
                " restarted and its room's seq passed ours"
            )
    elif cursor and from_start:
        warnings.append(
            f"the room's seq went back (ours {cursor}, the hub's {hub_last}): the hub restarted and its room"
            " starts again (what was said before the restart is gone from it); reading it from the start"
        )
    if (from_start or not cursor) and new and room_seq(new[0]) > 1:
        warnings.append(f"room messages before seq {room_seq(new[0])} are gone from the hub's ring")
    if not messages:
        return RoomRead([], cursor if hub_last >= cursor else 0, cursor_key, warnings)
    last = messages[-1]
    return RoomRead(new, room_seq(last), last.id, warnings)


def read_room_entries(body: Any) -> tuple[list[Message], list[Unreadable], Any]:
    """A `GET /api/room/messages` reply: readable messages, unreadable ones, `last_seq`."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise HubProtocolError("hub sent a room reply without a 'messages' list")
    readable: list[Message] = []
    unreadable: list[Unreadable] = []
    for raw in body["messages"]:
        try:
            readable.append(room_message(raw))
        except HubProtocolError as exc:
            text = json.dumps(raw, ensure_ascii=False)[:65536]
            sender = raw.get("from") if isinstance(raw, dict) and isinstance(raw.get("from"), str) else None
            unreadable.append(Unreadable(None, None, sender, str(exc).removeprefix("hub sent "), text))
    readable.sort(key=room_seq)
    return readable, unreadable, body.get("last_seq")
