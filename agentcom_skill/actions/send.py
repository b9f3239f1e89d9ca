"""Sending: `send`, `reply` (from the stored copy, guarantee 11), `ping`; into a channel or the
room; a send the hub probably took but never confirmed is recorded, never sent again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..errors import AgentComError, PossiblyDelivered, UsageError
from ..groups import Address, parse_address, room_key
from ..message import PRIORITIES, RESPOND_WITH, ROOM, Message
from ..store import MessageStore, row_message
from ..tier0 import mentions
from ..untrusted import safe_sender
from ..watchstate import read_status
from .check import run_check
from .common import hub_client, is_confirmed, open_store, resolve_settings, unconfirmed_id
from .hazards import watch_connected
from .refs import not_kept, parse_ref, stored_row

if TYPE_CHECKING:
    from ..client import HubClient
    from .common import Hub


def send(
    to: str,
    text: str | None = None,
    type: str | None = None,  # noqa: A002 - the protocol's field name
    reply_to: str | None = None,
    payload: Mapping[str, Any] | None = None,
    *,
    priority: str | None = None,
    needs: Iterable[str] = (),
    respond_with: str | None = None,
    settings: Settings | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Send a direct message (`to` an agent id), a broadcast (`to="broadcast"`, any case),
    publish in a channel (`to="#name"`) or post in the room (`to="@room"`, its text only)."""
    s = resolve_settings(settings, overrides)
    address = parse_address(to)
    body = _message_body(text, payload, priority, needs, respond_with)
    for name, value in (("type", type), ("reply_to", reply_to)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise UsageError(f"{name} must be a non-empty string")
    if address.kind in ("channel", "room"):
        return _say_in_group(s, address, type, body, reply_to, "send", [])
    to, warnings = _recipient(to, s.agent_id)
    known_anyway = to in ("broadcast", s.agent_id)
    return send_and_record(s, to, type, body, reply_to, "send", warnings, check_known=not known_anyway)


def _recipient(to: Any, me: str) -> tuple[str, list[str]]:
    """The recipient as the hub reads it (`broadcast` in any case is everyone), and warnings."""
    if not isinstance(to, str) or not to.strip():
        raise UsageError("to must be an agent id or 'broadcast'")
    to = to.strip()
    if to.casefold() == "broadcast":
        return "broadcast", [] if to == "broadcast" else [f"sending to everyone: {to!r} is read as broadcast"]
    if to == me:
        return to, ["sending to yourself: your own check drops it as an echo"]
    return to, []


def _message_body(text: Any, payload: Any, priority: Any, needs: Any, respond_with: Any) -> dict[str, Any]:
    """A message's payload from the text and the fields a sender may set (docs/messages.md)."""
    if payload is not None and not isinstance(payload, Mapping):
        raise UsageError("payload must be a JSON object")
    body = dict(payload or {})
    if text is not None:
        if not isinstance(text, str):
            raise UsageError("text must be a string")
        if text.strip():
            body["text"] = text
    if priority is not None:
        if priority not in PRIORITIES:
            raise UsageError(f"priority must be one of {', '.join(PRIORITIES)}")
        body["priority"] = priority
    needs = [needs] if isinstance(needs, str) else list(needs)
    if needs:
        body["needed_capabilities"] = needs
    if respond_with is not None:
        if respond_with not in RESPOND_WITH:
            raise UsageError(f"respond_with must be one of {', '.join(RESPOND_WITH)}")
        body["respond_with"] = respond_with
    if payload is None and not body.get("text"):
        raise UsageError("the message is empty: give a text (argument, - for stdin, or --text-file) or a payload")
    return body


def send_and_record(
    s: Settings,
    to: str,
    type_: str | None,
    body: dict[str, Any],
    reply_to: str | None,
    kind: str,
    warnings: list[str],
    check_known: bool = False,
) -> dict[str, Any]:
    """Send, then record in the local history. With `check_known`, warn (after sending) when
    nobody knows the recipient: never heard from here, and not connected to the hub."""
    with hub_client(s) as hub:
        try:
            msg_id = hub.send(to, type_, body, reply_to)
        except PossiblyDelivered as exc:
            # Never sent again on its own: a retry would be a duplicate if the hub took it.
            msg_id = unconfirmed_id()
            warnings.append(f"probably delivered, not confirmed: {exc}")
        if check_known:
            warnings += _unknown_recipient(hub, s, to)
    try:
        with open_store(s) as store, store.write():
            store.record_sent(msg_id, to, type_, body, reply_to, kind, time.time())
    except AgentComError as exc:  # sent all the same: say so rather than fail
        warnings.append(f"sent, but not recorded in the local history: {exc}")
    return {
        "id": msg_id,
        "to": to,
        "type": type_ or "chat",
        "reply_to": reply_to,
        "confirmed": is_confirmed(msg_id),
        "warnings": warnings,
    }


def _say_in_group(
    s: Settings,
    address: Address,
    type_: str | None,
    body: dict[str, Any],
    reply_to: str | None,
    kind: str,
    warnings: list[str],
) -> dict[str, Any]:
    """Publish in a channel or post in the room, then record it as sent (by the message's id
    in a channel, by its key in the room: a reply to it, or our own post read back, is known)."""
    if address.kind == "room" and (set(body) != {"text"} or reply_to is not None or type_ is not None):
        raise UsageError("the room takes a text only (no payload fields, type or reply_to)")
    with hub_client(s) as hub:
        try:
            msg_id = say_in_group(hub, address, type_, body, reply_to, warnings)
        except PossiblyDelivered as exc:
            msg_id = unconfirmed_id()
            warnings.append(f"probably delivered, not confirmed: {exc}")
    try:
        with open_store(s) as store, store.write():
            store.record_sent(msg_id, address.name, type_, body, reply_to, kind, time.time())
            if address.name not in store.groups():
                warnings.append(f"said in {address.name}, which this agent has not joined: answers there are not read")
    except AgentComError as exc:
        warnings.append(f"sent, but not recorded in the local history: {exc}")
    return {
        "id": msg_id,
        "to": address.name,
        "channel": address.name,
        "type": type_ or "chat",
        "reply_to": reply_to,
        "confirmed": is_confirmed(msg_id),
        "warnings": warnings,
    }


def say_in_group(
    hub: Any,  # a HubClient (the A2A dispatcher's is typed as the narrower Hub)
    address: Address,
    type_: str | None,
    body: dict[str, Any],
    reply_to: str | None,
    warnings: list[str],
) -> str:
    """Publish in a channel or post in the room (its text only): the id to record it under
    (in the room, the key its message gets when read back)."""
    if address.kind == "room":
        return room_key(hub.room_post(str(body.get("text") or "")))
    return _publish(hub, address.channel, type_, body, reply_to, warnings)


def _publish(
    hub: HubClient, channel: str, type_: str | None, body: dict[str, Any], reply_to: str | None, warnings: list[str]
) -> str:
    """Publish and find the message's id: the hub answers with the channel's seq only, so the
    id is read from the channel's history (kept, a reply to it is then recognised as one)."""
    seq = hub.publish(channel, type_, body, reply_to)
    try:
        for entry in hub.channel_history(channel, seq - 1, 200):
            message = entry.get("message")
            if entry.get("seq") == seq and isinstance(message, dict) and isinstance(message.get("id"), str):
                return str(message["id"])
    except AgentComError as exc:
        warnings.append(f"published, but its id could not be read from the channel's history: {exc}")
        return unconfirmed_id()
    warnings.append("published, but its id was not in the channel's history")
    return unconfirmed_id()


def _unknown_recipient(hub: Hub, s: Settings, to: str) -> list[str]:
    """A note when `to` never wrote to us, was never sent to from here before, and is not
    among the agents the hub lists as connected; none otherwise. The hub's list is read only
    when needed.

    The note never calls the id a typo: the real hub answers the same for an agent that only
    polls its mailbox as for an id nobody registered (`/api/agents` and
    `/api/agents/:id/state` know connected agents only), so all it can say is that the agent
    is not connected and gets the message when it polls."""
    try:
        with open_store(s) as store:
            if store.peers().get(to) is not None or store.messages(sender=to, limit=1) or store.sent_to(to):
                return []
    except AgentComError:
        pass  # no usable store: the hub's list alone decides
    try:
        if any(a.get("agent_id") == to for a in hub.agents()):
            return []
    except AgentComError as exc:
        return [
            f"sent, but {safe_sender(to)} never wrote to us and the hub's agent list could not be read ({exc}): "
            "check the agent id"
        ]
    return [
        f"sent; {safe_sender(to)} is not connected to the hub and has not written to us: it gets the message "
        "when it polls its mailbox (the hub cannot tell an agent that only polls from an id nobody uses, "
        "so check the id if it is new to you)"
    ]


def reply(ref: int | str, text: str, *, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Answer a stored message (by seq or id) where it was said: a response to its sender,
    reply_to its id; in its channel (reply_to its id); in the room (naming its claimed sender).

    Addressed from the local copy (guarantee 11), so it works after an ack and cannot go
    to another sender when the hub reuses a seq.
    """
    s = resolve_settings(settings, overrides)
    if not isinstance(text, str) or not text.strip():
        raise UsageError("the reply is empty: give a text")
    parsed = parse_ref(ref)
    row, warnings = stored_row(s, parsed)
    msg = row_message(row)
    if msg is None:
        raise not_kept(parsed)
    where = msg.channel
    if where == ROOM:
        # Named when the claimed name is a plain one (any text may be claimed; never repeated raw).
        plain = re.match(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$", msg.sender) is not None
        said = text if not plain or mentions(text, msg.sender) else f"@{msg.sender} {text}"
        return _say_in_group(s, parse_address(ROOM), None, {"text": said}, None, "reply", warnings)
    if where is not None:
        return _say_in_group(s, parse_address(where), "response", {"text": text}, msg.id, "reply", warnings)
    return send_and_record(s, msg.sender, "response", {"text": text}, msg.id, "reply", warnings)


def ping(
    agent: str,
    timeout: float = 10.0,
    *,
    settings: Settings | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    **overrides: Any,
) -> dict[str, Any]:
    """Send `agent` a ping and wait up to `timeout` seconds for its pong (a `response` with
    payload.action pong, reply_to the ping). `pong_id` is None at the timeout.

    Waiting takes nothing from the agent: the mailbox is taken in as the watch's drain does
    (Tier 0 files the pong; attention messages are stored, never leased or shown), and with a
    live watch only the store is read (the watch files the pong as it is pushed).
    """
    s = resolve_settings(settings, overrides)
    if not isinstance(agent, str) or not agent.strip():
        raise UsageError("ping needs an agent id")
    agent = agent.strip()
    if agent.casefold() == "broadcast" or agent == s.agent_id:
        raise UsageError("ping one other agent by its id (not broadcast, not yourself)")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 86400:
        raise UsageError("the ping timeout must be between 0 and 86400 seconds")
    give_up_at = clock() + timeout
    from ..client import HubClient  # noqa: F401 - loaded before the clock starts: the round trip is the hub's, not an import's

    sent_at = time.time()
    sent = send_and_record(s, agent, "ping", {"action": "ping"}, None, "send", [], check_known=True)
    result = {
        "agent": agent,
        "ping_id": sent["id"],
        "pong_id": None,
        "round_trip": None,
        "status": None,
        "timeout": float(timeout),
        "warnings": sent["warnings"],
    }
    started, delay = clock(), PONG_LOOK_INTERVAL
    with open_store(s) as store, hub_client(s) as hub:
        while True:
            if not watch_connected(read_status(s.agent_state_dir())):
                run_check(hub, store, s, limit=0, now=time.time(), agents_check=False)
            pong = _pong(store, sent["id"], agent)
            if pong is not None:
                status = pong.payload.get("status")
                row = store.resolve(pong.id)
                received_at = row["received_at"] if row is not None else time.time()
                result.update(
                    pong_id=pong.id,
                    round_trip=max(0.0, received_at - sent_at),
                    status=status if isinstance(status, str) else None,
                )
                return result
            left = give_up_at - clock()
            if left <= 0:
                result["warnings"] += _not_listening(hub, agent)
                return result
            sleep(min(delay, left))
            if clock() - started >= PONG_CLOSE_LOOKS:  # a live peer has answered by now: back off
                delay = min(1.0, delay * 2)


# How `ping` looks for its pong: every PONG_LOOK_INTERVAL seconds for the first PONG_CLOSE_LOOKS
# seconds (a peer's watch answers within a few hundred ms, and without our own watch the round
# trip is measured when a look finds the pong), then backing off to one look a second.
PONG_LOOK_INTERVAL = 0.05
PONG_CLOSE_LOOKS = 2.0


def _not_listening(hub: Hub, agent: str) -> list[str]:
    """Why no pong came, when the hub can say: `agent` holds no WebSocket (no watch), so only
    its own next `check` will answer (Tier 0 does, in code)."""
    try:
        if any(a.get("agent_id") == agent for a in hub.agents()):
            return []
    except AgentComError:
        return []
    return [
        f"{safe_sender(agent)} is not connected to the hub (no `agentcom watch` runs for it): it answers the ping"
        " at its next `agentcom check`, and the pong then waits in your mailbox"
    ]


def _pong(store: MessageStore, ping_id: str, agent: str) -> Message | None:
    for row in store.replies_to([ping_id]):
        msg = row_message(row)
        if msg is not None and msg.sender == agent and msg.action == "pong":
            return msg
    return None
