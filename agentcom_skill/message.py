"""Mailbox messages as the hub sends them, validated once at the boundary."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from .errors import HubProtocolError

PRIORITY_RANK = {"urgent": 0, "high": 1}


def fold(value: Any) -> str:
    """Case- and space-insensitive form of a protocol word; '' for anything not a string."""
    return value.strip().casefold() if isinstance(value, str) else ""


class Message(NamedTuple):
    seq: int | None  # None for a message pushed over the WebSocket
    id: str
    sender: str
    to: str | None
    type: str
    payload: dict[str, Any]
    reply_to: str | None
    timestamp: int | None

    @property
    def broadcast(self) -> bool:
        return self.to is None or fold(self.to) == "broadcast"

    @property
    def text(self) -> str | None:
        text = self.payload.get("text")
        return text if isinstance(text, str) else None

    @property
    def action(self) -> str:
        return fold(self.payload.get("action"))

    @property
    def priority(self) -> str:
        value = fold(self.payload.get("priority"))
        return value if value in ("low", "high", "urgent") else "normal"

    @property
    def needed_capabilities(self) -> frozenset[str]:
        needed = self.payload.get("needed_capabilities")
        if isinstance(needed, str):  # a single string counts as a one-element list
            needed = [needed]
        if not isinstance(needed, list):
            return frozenset()
        return frozenset(f for f in (fold(n) for n in needed) if f)

    def to_json(self) -> dict[str, Any]:
        """The message as the hub sent it."""
        return {
            "id": self.id,
            "from": self.sender,
            "to": self.to,
            "type": self.type,
            "payload": self.payload,
            "reply_to": self.reply_to,
            "timestamp": self.timestamp,
            "seq": self.seq,
        }


class MailboxBatch(NamedTuple):
    messages: list[Message]
    last_seq: int


def _is_int(value: Any) -> bool:
    """An integer that fits the store's 64-bit columns."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**62) < value < 2**62


def parse_message(raw: Any, index: int = 0) -> Message:
    where = f"message #{index}"
    if not isinstance(raw, dict):
        raise HubProtocolError(f"hub sent a mailbox {where} that is not an object")
    seq = raw.get("seq")
    if not _is_int(seq):
        raise HubProtocolError(f"hub sent a mailbox {where} whose seq is not an integer")
    for name in ("id", "from"):
        if not isinstance(raw.get(name), str) or not raw[name]:
            raise HubProtocolError(f"hub sent mailbox message seq {seq} without a string {name!r}")
    if len(raw["id"]) > 128 or not raw["id"].isprintable() or not raw["id"].isascii():
        raise HubProtocolError(f"hub sent mailbox message seq {seq} whose id is not a short printable ASCII string")
    for name in ("to", "reply_to"):
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise HubProtocolError(f"hub sent mailbox message seq {seq} whose {name!r} is not a string")
    type_ = raw.get("type")
    if type_ is not None and not isinstance(type_, str):
        raise HubProtocolError(f"hub sent mailbox message seq {seq} whose 'type' is not a string")
    payload = raw.get("payload")
    if not isinstance(payload, dict):
        raise HubProtocolError(f"hub sent mailbox message seq {seq} whose payload is not an object")
    timestamp = raw.get("timestamp")
    if timestamp is not None and not _is_int(timestamp):
        if isinstance(timestamp, float) and math.isfinite(timestamp) and abs(timestamp) < 1e18:
            timestamp = int(timestamp)
        else:
            raise HubProtocolError(f"hub sent mailbox message seq {seq} whose timestamp is not a number")
    return Message(
        seq=seq,
        id=raw["id"],
        sender=raw["from"],
        to=raw.get("to"),
        type=type_ or "chat",
        payload=payload,
        reply_to=raw.get("reply_to"),
        timestamp=timestamp,
    )


def parse_mailbox(body: Any, since: int) -> MailboxBatch:
    """Validate a `GET /api/mailbox` body; messages come back sorted by seq."""
    if not isinstance(body, dict):
        raise HubProtocolError("hub sent a mailbox reply that is not a JSON object")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        raise HubProtocolError("hub sent a mailbox reply without a 'messages' list")
    messages = [parse_message(m, i) for i, m in enumerate(raw_messages)]
    messages.sort(key=lambda m: m.seq)
    last_seq = body.get("last_seq", messages[-1].seq if messages else since)
    if not _is_int(last_seq):
        raise HubProtocolError("hub sent a mailbox reply whose last_seq is not an integer")
    return MailboxBatch(messages=messages, last_seq=last_seq)


def parse_pushed(frame: Any, me: str) -> Message:
    """A `message` frame pushed over the WebSocket, as a `Message` without a seq.

    The frame carries no `to`: a message naming `needed_capabilities` is taken as a
    broadcast (that field is for broadcasts, and rule 8 needs to know), any other as
    addressed to `me`.
    """
    if not isinstance(frame, dict):
        raise HubProtocolError("hub pushed a message frame that is not an object")
    raw = {
        "seq": 0,
        "id": frame.get("id"),
        "from": frame.get("from"),
        "type": frame.get("message_type"),
        "payload": frame.get("payload"),
        "reply_to": frame.get("reply_to"),
        "timestamp": frame.get("timestamp"),
    }
    msg = parse_message(raw)
    broadcast = isinstance(msg.payload, dict) and "needed_capabilities" in msg.payload
    return Message(
        seq=None, id=msg.id, sender=msg.sender, to=None if broadcast else me, type=msg.type,
        payload=msg.payload, reply_to=msg.reply_to, timestamp=msg.timestamp,
    )
