"""An A2A answer's way back to its sender, and how a restart finds out whether it arrived.

The answer's key (`ANSWER_KEY` in its payload) is stored before its POST; after a crash or a
lost connection during the POST, the hub's message history is asked for an answer carrying
that key (`answer_at_hub`). Where the hub keeps no history, the answer counts as possibly
sent and is never sent twice."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..actions.check import ack_hub_prefix  # the same hub-ack prefix rule as `check` and `ack`
from ..actions.send import say_in_group
from ..config import Settings
from ..errors import AgentComError, HubUnavailableError
from ..groups import parse_address
from ..store import MessageStore
from .plan import is_group

if TYPE_CHECKING:
    from ..actions.common import Hub

ANSWER_KEY = "idempotency_key"  # the payload field that names an answer: found at the hub after a restart
ANSWER_LOOKBACK = 3600.0  # seconds before a task was taken from which the hub's history is searched for its answer
MAYBE_ANSWERED = (
    "may or may not have reached the hub (its POST was cut short, by a crash or a lost connection, and the hub"
    " keeps no history to ask): not sent again"
)


def answer_at_hub(hub: Hub, agent_id: str, task: Any, key: str) -> tuple[str, str | None]:
    """Whether an answer carrying `key` reached the hub, from its message history:
    ("found", its id), ("absent", None), ("unknown", None) when the hub keeps no history to
    ask, ("unreachable", why). The history is asked from an hour before the task was taken
    (clocks differ), for what we sent to that peer."""
    lookup = getattr(hub, "answers_sent", None)
    if lookup is None:
        return "unknown", None
    since = (task["accepted_at"] or task["created_at"]) - ANSWER_LOOKBACK
    try:
        replies = lookup(agent_id, task["peer"], int(since * 1000))
    except HubUnavailableError as exc:
        return "unreachable", str(exc)
    except AgentComError:
        return "unknown", None
    if replies is None:
        return "unknown", None
    for r in replies:
        payload = r.get("payload")
        if (
            r.get("from") == agent_id
            and isinstance(payload, dict)
            and payload.get(ANSWER_KEY) == key
            and isinstance(r.get("id"), str)
        ):
            return "found", r["id"]
    return "absent", None


def post_answer(hub: Hub, peer: str, payload: dict[str, Any], reply_to: str) -> tuple[str, dict[str, Any]]:
    """Send an answer to its peer (into the channel or the room for what was said there):
    its hub id and the payload sent. Raises what the hub client raises."""
    if is_group(peer):
        address = parse_address(peer)
        if address.kind == "room":
            payload = {"text": payload["text"]}  # the room takes a text only
        return say_in_group(hub, address, "response", payload, reply_to, []), payload
    return hub.send(peer, "response", payload, reply_to), payload


def ack_carried(hub: Hub, store: MessageStore, s: Settings, ids: list[str]) -> None:
    """Messages polled from the mailbox (they have a seq) stay at the hub until acked."""
    rows = [store.resolve(i) for i in ids]
    if not any(r is not None and r["seq"] is not None for r in rows):
        return
    try:
        batch = hub.poll(s.agent_id, 0)
    except AgentComError:
        return  # the next drain or check acks it
    up_to, _ = ack_hub_prefix(hub, store, s, batch)
    if up_to is not None:
        with store.write():
            store.set_meta("hub_acked", up_to)


__all__ = ["ANSWER_KEY", "MAYBE_ANSWERED", "ack_carried", "answer_at_hub", "post_answer"]
