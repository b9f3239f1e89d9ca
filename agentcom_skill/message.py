"""Mailbox messages as the hub sends them, validated once at the boundary."""

from __future__ import annotations

import json
import math
import re
from typing import Any, NamedTuple, TypeGuard

from .errors import HubProtocolError

PRIORITIES = ("low", "normal", "high", "urgent")  # payload.priority; anything else reads as normal
RESPOND_WITH = ("structured", "natural", "none")  # payload.respond_with
PRIORITY_RANK = {"urgent": 0, "high": 1}  # attention order: urgent, high, then the rest
ROOM = "@room"  # the hub's room, as an address and as a room message's recipient (groups.py)


def fold(value: Any) -> str:
    """Case- and space-insensitive form of a protocol word; '' for anything not a string."""
    return value.strip().casefold() if isinstance(value, str) else ""


def payload_text(payload: dict[str, Any]) -> str | None:
    """A payload's text: a string as is, a number (the hub takes `"text": 42`) as its JSON
    digits, anything else None (rendered with the rest of the payload)."""
    text = payload.get("text")
    if isinstance(text, str):
        return text
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return json.dumps(text)
    return None


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
        to = self.to  # (read for every message of a check: kept cheap)
        return to is None or to == "broadcast" or to.strip().casefold() == "broadcast"

    @property
    def channel(self) -> str | None:
        """Where it was said: "#name" for a channel's copy (the hub sets `payload.channel` and
        no recipient), "@room" for the room, None for a direct message or a broadcast."""
        if self.to == ROOM:
            return ROOM
        if self.to is None:
            name = self.payload.get("channel")
            if isinstance(name, str):
                return "#" + name
        return None

    @property
    def text(self) -> str | None:
        return payload_text(self.payload)

    @property
    def action(self) -> str:
        return fold(self.payload.get("action"))

    @property
    def priority(self) -> str:
        value = fold(self.payload.get("priority"))
        return value if value in PRIORITIES else "normal"

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


class Unreadable(NamedTuple):
    """A mailbox entry or pushed frame that cannot be read as a message (nested too deep, a
    field of the wrong type, a constant JSON does not have): set aside as a poison record,
    with what could be read of it, so the rest of the batch goes on."""

    seq: int | None
    id: str | None
    sender: str | None
    reason: str
    raw: str  # its JSON text, cut to RAW_LIMIT characters, for a human

    @property
    def key(self) -> str:
        """What the store keeps it under: its id, or its seq when the id cannot be read, or
        else a digest of its text (the same entry polled again is then known, not new)."""
        if self.id is not None:
            return self.id
        if self.seq is not None:
            return f"unreadable-seq-{self.seq}"
        import hashlib  # late: only an entry with neither a readable id nor a seq needs it

        return "unreadable-" + hashlib.sha256(self.raw.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class MailboxBatch(NamedTuple):
    messages: list[Message]  # readable ones, one per id, sorted by seq
    last_seq: int
    unreadable: tuple[Unreadable, ...] = ()
    # (seq, id or key) of every entry the hub sent, duplicates included, sorted: what the hub's
    # prefix ack covers. Empty for batches built by hand (pushed frames): `messages` stands in.
    entries: tuple[tuple[int, str], ...] = ()
    # False: the hub's reply was longer than max_response_bytes and only the entries complete
    # in its first part are here; the hub holds more (at higher seqs).
    complete: bool = True


MAX_DEPTH = 100  # nesting levels a payload may have (the payload object is level 1)
RAW_LIMIT = 65536


def _is_int(value: Any) -> TypeGuard[int]:
    """An integer that fits the store's 64-bit columns."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**62) < value < 2**62


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests more than `limit` levels (iteratively: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


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
    return Message(
        seq=seq,
        id=raw["id"],
        sender=raw["from"],
        to=raw.get("to"),
        type=type_ or "chat",
        payload=_payload(raw.get("payload"), seq),
        reply_to=raw.get("reply_to"),
        timestamp=_timestamp(raw.get("timestamp"), seq),
    )


def _payload(payload: Any, seq: int) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise HubProtocolError(f"hub sent mailbox message seq {seq} whose payload is not an object")
    if any(isinstance(v, (dict, list)) for v in payload.values()) and _deeper_than(payload, MAX_DEPTH):
        raise HubProtocolError(f"hub sent mailbox message seq {seq} whose payload nests deeper than {MAX_DEPTH} levels")
    return payload


def _timestamp(timestamp: Any, seq: int) -> int | None:
    if timestamp is None or _is_int(timestamp):
        return timestamp
    if isinstance(timestamp, float) and math.isfinite(timestamp) and abs(timestamp) < 1e18:
        return int(timestamp)
    raise HubProtocolError(f"hub sent mailbox message seq {seq} whose timestamp is not a number")


def parse_mailbox(body: Any, since: int) -> MailboxBatch:
    """Validate a decoded `GET /api/mailbox` body. The whole reply must have the contract's
    shape (else HubProtocolError); a single entry that does not is set aside as unreadable."""
    if not isinstance(body, dict):
        raise HubProtocolError("hub sent a mailbox reply that is not a JSON object")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        raise HubProtocolError("hub sent a mailbox reply without a 'messages' list")
    return _batch(raw_messages, body.get("last_seq"), since)


def parse_mailbox_bytes(data: bytes, since: int, complete: bool = True, limit: int = 0) -> MailboxBatch:
    """`parse_mailbox` from the reply's bytes. A body Python's parser cannot take whole (an
    entry nested past its recursion limit, NaN) is split into its entries, so one bad entry
    is set aside and the others are read. `complete` False: `data` is the first `limit` bytes
    of a longer reply, and its complete entries are read."""
    if not complete:
        return _mailbox_prefix(data, since, limit)
    try:
        text = data.decode("utf-8")
        return parse_mailbox(json.loads(text, parse_constant=_refuse_constant), since)
    except UnicodeDecodeError:
        raise HubProtocolError("hub sent a mailbox reply that is not UTF-8 JSON") from None
    except (RecursionError, _Constant):
        pass
    except ValueError:
        raise HubProtocolError("hub sent a mailbox reply that is not JSON") from None
    split = _split_mailbox(text)
    if split is None:
        raise HubProtocolError("hub sent a mailbox reply that is not JSON")
    top, elements = split
    return _batch(_read_elements(elements), top.get("last_seq"), since)


def _read_elements(elements: list[str]) -> list[Any]:
    """Each entry's value, or a `_Broken` holding the text Python's parser could not take."""
    entries: list[Any] = []
    for element in elements:
        try:
            entries.append(json.loads(element, parse_constant=_refuse_constant))
        except (RecursionError, ValueError) as exc:
            entries.append(_Broken(_why_unparsable(exc), element))
    return entries


def _mailbox_prefix(data: bytes, since: int, limit: int) -> MailboxBatch:
    """The entries complete in the first part of a mailbox reply too long to read whole."""
    import codecs  # late: only a reply over max_response_bytes needs it

    try:  # the cut may fall inside a character: decode what is whole
        text = codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError:
        raise HubProtocolError("hub sent a mailbox reply that is not UTF-8 JSON") from None
    elements = _complete_elements(text)
    if not elements:
        raise HubProtocolError(
            f"hub sent a mailbox whose first message alone is over the {limit}-byte limit"
            " (the setting max_response_bytes: raise it to read that message)"
        )
    return _batch(_read_elements(elements), None, since)._replace(complete=False)


# As _TOKENS, but a string the cut left open is one token too, up to the end (scanning it
# as structure would restart at each of its escaped quotes: quadratic in a text of quotes).
_CUT_TOKENS = r'"[^"\\]*(?:\\[\s\S][^"\\]*)*(?P<closed>")?|[\[{]+|[\]}]+|[,:]'


def _complete_elements(text: str) -> list[str]:
    """The texts of the entries of a mailbox body's `messages` array that end before `text`
    does (a body cut short): those followed by a comma, or all when the array closes."""
    found = _Structure()
    for match in re.finditer(_CUT_TOKENS, text):
        if match.group()[0] == '"' and match.group("closed") is None:
            break  # the string the cut left open: the end of what can be read
        if found.feed(match.group(), match.start()):
            break
    if found.array_at < 0:
        return []
    ends = [*found.commas, *([found.end] if found.end >= 0 else [])]
    starts = [found.array_at, *(comma + 1 for comma in found.commas)]
    return [text[a:b] for a, b in zip(starts, ends, strict=False) if text[a:b].strip()]


class _Constant(ValueError):
    """NaN or Infinity: Python reads them, JSON does not have them."""


def _refuse_constant(name: str) -> Any:
    raise _Constant(f"{name} is not JSON")


class _Broken(NamedTuple):
    reason: str
    text: str


def _why_unparsable(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return f"nested deeper than this client's parser allows (limit {MAX_DEPTH} levels)"
    return "not valid JSON (" + (str(exc)[:80] if isinstance(exc, _Constant) else "syntax") + ")"


def _batch(raw_entries: list[Any], last_seq: Any, since: int) -> MailboxBatch:
    """Read every entry; dedupe by id (the first, lowest seq, wins); set aside the unreadable."""
    read: list[Message] = []
    unreadable: list[Unreadable] = []
    for index, raw in enumerate(raw_entries):
        if isinstance(raw, _Broken):
            unreadable.append(_unreadable(_shallow(raw.text), raw.reason, raw.text))
            continue
        try:
            read.append(parse_message(raw, index))
        except HubProtocolError as exc:
            reason = str(exc).removeprefix("hub sent ").removeprefix("a ")
            # its text as parsed, not as sent: the same entry read whole or from a cut reply
            # is the same text (the key of one with neither id nor seq is its digest)
            unreadable.append(_unreadable(raw, reason, _dump(raw)))
    read.sort(key=lambda m: m.seq or 0)  # (every mailbox message has a seq: parse_message checked it)
    entries = [(m.seq or 0, m.id) for m in read]
    messages: list[Message] = []
    seen: set[str] = set()
    for msg in read:
        if msg.id not in seen:
            seen.add(msg.id)
            messages.append(msg)
    aside: list[Unreadable] = []
    for item in unreadable:
        if item.id is not None and item.id in seen:
            continue  # a broken copy of a message read fine: the hub's prefix ack covers it by that id
        if item.seq is not None:
            entries.append((item.seq, item.key))
        aside.append(item)
    entries.sort()
    if last_seq is None:
        last_seq = entries[-1][0] if entries else since
    if not _is_int(last_seq):
        raise HubProtocolError("hub sent a mailbox reply whose last_seq is not an integer")
    return MailboxBatch(messages=messages, last_seq=last_seq, unreadable=tuple(aside), entries=tuple(entries))


def _unreadable(raw: Any, reason: str, text: str) -> Unreadable:
    """What can be read of a bad entry: its id, seq and sender when they have the right type."""
    fields = raw if isinstance(raw, dict) else {}
    msg_id = fields.get("id")
    sender = fields.get("from")
    ok_id = isinstance(msg_id, str) and 0 < len(msg_id) <= 128 and msg_id.isprintable() and msg_id.isascii()
    return Unreadable(
        seq=fields["seq"] if _is_int(fields.get("seq")) else None,
        id=msg_id if ok_id else None,
        sender=sender[:256] if isinstance(sender, str) and sender else None,
        reason=reason,
        raw=text[:RAW_LIMIT],
    )


def _dump(raw: Any) -> str:
    try:
        return json.dumps(raw, ensure_ascii=False)
    except (ValueError, RecursionError, TypeError):
        return repr(raw)[:RAW_LIMIT]


# Strings (with their escapes), runs of openers, runs of closers, separators: all a scan of
# JSON's structure needs. Numbers, literals and white space are the text between tokens.
_TOKENS = r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[{]+|[\]}]+|[,:]'  # compiled (by re's cache) when first used


class _Structure:
    """Where the `messages` array of a mailbox body starts and ends, and the commas between
    its entries, found from the text's structure alone (fed one token at a time)."""

    def __init__(self) -> None:
        self.depth = 0
        self.key: str | None = None  # the last key read at the top level (with its quotes)
        self.last_string: str | None = None
        self.array_at = -1  # just after the array's `[`
        self.end = -1  # at its `]`
        self.commas: list[int] = []

    def feed(self, token: str, at: int) -> bool:
        """Take one token; True once the array has ended."""
        first = token[0]
        if first == '"':
            self.last_string = token
        elif first == ":":
            if self.depth == 1:
                self.key = self.last_string
        elif first == ",":
            if self.array_at >= 0 and self.depth == 2:
                self.commas.append(at)
        elif first in "[{":
            self._open(token, at)
        else:
            return self._close(token, at)
        return False

    def _open(self, token: str, at: int) -> None:
        if self.depth >= 3:  # inside an entry: a run of any length costs one step
            self.depth += len(token)
            return
        for offset, char in enumerate(token):
            self.depth += 1
            if self.depth == 2 and char == "[" and self.key == '"messages"' and self.array_at < 0:
                self.array_at = at + offset + 1

    def _close(self, token: str, at: int) -> bool:
        if self.depth - len(token) >= 2:
            self.depth -= len(token)
            return False
        for offset in range(len(token)):
            self.depth -= 1
            if self.depth == 1 and self.array_at >= 0:
                self.end = at + offset
                return True
        return False


def _split_mailbox(text: str) -> tuple[dict[str, Any], list[str]] | None:
    """The texts of the entries of a mailbox body's `messages` array, and the body's other
    top-level fields, found by scanning its structure without parsing (so depth costs nothing).
    None when the body is not an object holding a `messages` array."""
    found = _Structure()
    if not any(found.feed(match.group(), match.start()) for match in re.finditer(_TOKENS, text)):
        return None
    starts = [found.array_at, *(comma + 1 for comma in found.commas)]
    ends = [*found.commas, found.end]
    elements = [text[a:b] for a, b in zip(starts, ends, strict=True) if text[a:b].strip()]
    try:
        top = json.loads(text[: found.array_at] + text[found.end :], parse_constant=lambda _: None)
    except (ValueError, RecursionError):
        return None
    return (top, elements) if isinstance(top, dict) else None


def _shallow(text: str) -> dict[str, Any]:
    """An entry's own fields with every nested value replaced by null: what can be read of an
    entry too deep to parse (its id, seq, sender). {} when even that fails."""
    out: list[str] = []
    depth, last = 0, 0
    cut_from = -1
    for match in re.finditer(_TOKENS, text):
        token, at = match.group(), match.start()
        if token[0] in "[{":
            if depth == 0:
                if token != "{":
                    return {}
                depth = 1
            else:
                if depth == 1:
                    cut_from = at
                depth += len(token)
        elif token[0] in "]}":
            before = depth
            depth -= len(token)
            if before > 1 and depth <= 1 and cut_from >= 0:
                out.append(text[last:cut_from] + "null")
                last = at + (before - 1)
                cut_from = -1
    out.append(text[last:])
    try:
        value = json.loads("".join(out), parse_constant=lambda _: None)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


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
        seq=None,
        id=msg.id,
        sender=msg.sender,
        to=None if broadcast else me,
        type=msg.type,
        payload=msg.payload,
        reply_to=msg.reply_to,
        timestamp=msg.timestamp,
    )


HUB_SENDER = "hub"  # the sender of notices about what the hub itself did (a task it assigned)


def task_notice(frame: dict[str, Any], me: str, raw: str | bytes) -> Message | Unreadable:
    """A `task_assign` frame as a notice to keep (Tier 0 stores it, never wakes for it): the
    hub assigned us a task, which the watch declines. Its id is the task's and generation's."""
    task_id, generation = frame.get("task_id"), frame.get("generation")
    if not isinstance(task_id, str) or not task_id:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return _unreadable({"id": None, "from": HUB_SENDER}, "a task_assign frame without a task_id", text)
    description = frame.get("description")
    summary = description if isinstance(description, str) else ""
    return Message(
        seq=None,
        id=f"{task_id}.{generation if isinstance(generation, int) else 0}"[:200],
        sender=HUB_SENDER,
        to=me,
        type="task_assign",
        payload={
            "action": "notify",
            "text": f"the hub assigned task {task_id} ({summary[:500]}); declined: this agent runs no hub tasks",
            "task": frame,
        },
        reply_to=None,
        timestamp=frame.get("assigned_at") if isinstance(frame.get("assigned_at"), int) else None,
    )


def decode_frame(data: str | bytes) -> tuple[dict[str, Any], str | None]:
    """A WebSocket frame as a dict, and None. A frame Python's parser cannot take whole (too
    deep, NaN): its top-level fields with nested values as null, and why. Not a JSON object:
    ({}, why)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        frame = json.loads(text, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        return {}, "not UTF-8"
    except (RecursionError, ValueError) as exc:
        return _shallow(text), _why_unparsable(exc)
    return (frame, None) if isinstance(frame, dict) else ({}, "not a JSON object")


def pushed_message(
    frame: dict[str, Any], me: str, raw: str | bytes, problem: str | None = None
) -> Message | Unreadable:
    """A pushed `message` frame as a `Message`, or, when it cannot be read, as `Unreadable`
    with its id and sender where they can be read (pushed messages have no seq)."""
    if problem is None:
        try:
            return parse_pushed(frame, me)
        except HubProtocolError as exc:
            problem = str(exc).removeprefix("hub sent ").removeprefix("hub pushed ")
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return _unreadable({"id": frame.get("id"), "from": frame.get("from")}, problem, text)
