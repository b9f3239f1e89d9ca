"""Tier 0: the default rule table of protocol part 3, as pure functions (no I/O, no LLM).

`classify` maps one message and a `Tier0Config` to a `Tier0Decision`; `coalesce`
picks which auto-replies one run sends. Everything stateful (what was seen, the
per-minute reply budget) is decided by the caller and passed in.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Collection, Iterable, Sequence
from typing import NamedTuple

from .message import PRIORITY_RANK, ROOM, Message, fold

ATTENTION = "attention"
AUTO_REPLY = "auto_reply"
STORE = "store"
DROP = "drop"
DISPOSITIONS = (AUTO_REPLY, STORE, DROP)

PONG = "pong"
STATUS_REPLY = "status_reply"
AUTO_REPLY_ACTIONS = frozenset({PONG, STATUS_REPLY})
_NOTIFICATION_WORDS = ("notify", "progress", "ack", PONG, STATUS_REPLY)
ATTEND = ("mentions", "all", "none")  # what of a channel or the room needs the agent
GROUP_RULE = 10


class Tier0Config(NamedTuple):
    agent_id: str
    capabilities: frozenset[str] = frozenset()
    ignore_from: tuple[str, ...] = ()
    allow_from: tuple[str, ...] = ()  # empty: everyone not ignored may reach the agent
    groups: tuple[tuple[str, str], ...] = ()  # joined channels ("#name") and "@room", each with its ATTEND

    @classmethod
    def build(
        cls,
        agent_id: str,
        capabilities: Iterable[str] = (),
        ignore_from: Iterable[str] = (),
        allow_from: Iterable[str] = (),
        groups: Iterable[tuple[str, str]] = (),
    ) -> Tier0Config:
        caps = frozenset(c for c in (fold(c) for c in capabilities) if c)
        return cls(
            agent_id=agent_id,
            capabilities=caps,
            ignore_from=tuple(fold(p) for p in ignore_from if fold(p)),
            allow_from=tuple(fold(p) for p in allow_from if fold(p)),
            groups=tuple(sorted(groups)),
        )


class Tier0Decision(NamedTuple):
    disposition: str  # attention | auto_reply | store | drop
    rule: int  # row of the protocol's table
    reason: str  # in words, for the log and the `why` field
    reply: str | None = None  # pong or status_reply, for auto_reply


def classify(msg: Message, config: Tier0Config, duplicate: bool = False, ours: Collection[str] = ()) -> Tier0Decision:
    """Apply the table's rows in order; the first that matches wins. `ours`: ids of messages
    this agent sent (a reply to one of them in a channel needs the agent)."""
    where = msg.channel
    if where is not None:
        return _in_group(msg, where, config, duplicate, ours)
    return _by_sender(msg, config, duplicate) or _by_content(msg) or _by_audience(msg, config)


def _in_group(msg: Message, where: str, config: Tier0Config, duplicate: bool, ours: Collection[str]) -> Tier0Decision:
    """Row 10: a message said in a channel or the room. A room message's sender is only
    claimed (anyone may post under any name), so it never counts as us or as allowed, and
    nothing is answered automatically; our own posts come back by their key (`ours`)."""
    decided = _room_sender(msg, config, duplicate, ours) if where == ROOM else _by_sender(msg, config, duplicate)
    if decided is not None:
        return decided
    attend = dict(config.groups).get(where)
    if attend is None:
        return Tier0Decision(DROP, GROUP_RULE, f"said in {where}, which we did not join (or left)")
    decided = None if where == ROOM else _by_content(msg)
    if decided is not None:
        return decided
    if attend == "all":
        return Tier0Decision(ATTENTION, GROUP_RULE, f"said in {where} (attend all)")
    if attend == "none":
        return Tier0Decision(STORE, GROUP_RULE, f"said in {where} (attend none)")
    if mentions(msg.text, config.agent_id):
        return Tier0Decision(ATTENTION, GROUP_RULE, f"names @{config.agent_id} in {where}")
    if msg.reply_to is not None and msg.reply_to in ours:
        return Tier0Decision(ATTENTION, GROUP_RULE, f"replies to our message in {where}")
    return Tier0Decision(STORE, GROUP_RULE, f"chatter in {where} (neither naming us nor replying to us)")


def _room_sender(msg: Message, config: Tier0Config, duplicate: bool, ours: Collection[str]) -> Tier0Decision | None:
    """Rows 1-3 for the room, where the sender is only claimed."""
    if duplicate:
        return Tier0Decision(DROP, 1, "duplicate")
    if msg.id in ours:
        return Tier0Decision(DROP, 2, "own room post")
    if config.allow_from:
        return Tier0Decision(STORE, 3, "room sender is only claimed: never on allow_from")
    return None


def mentions(text: str | None, agent_id: str) -> bool:
    """Whether `text` names `@agent_id` as a word (any case): not inside a longer name."""
    if not text or not agent_id:
        return False
    return re.search(rf"(?<![\w@.-])@{re.escape(agent_id)}(?![\w-]|\.\w)", text, re.IGNORECASE) is not None


def _by_sender(msg: Message, config: Tier0Config, duplicate: bool) -> Tier0Decision | None:
    """Rows 1-3: duplicates, our own echoes, ignored senders (and, with allow_from, everyone else)."""
    if duplicate:
        return Tier0Decision(DROP, 1, "duplicate")
    if msg.sender == config.agent_id:
        return Tier0Decision(DROP, 2, "own echo")
    sender = fold(msg.sender)
    for pattern in config.ignore_from:
        if fnmatch.fnmatchcase(sender, pattern):
            return Tier0Decision(DROP, 3, f"ignored sender ({pattern})")
    if config.allow_from and not any(fnmatch.fnmatchcase(sender, p) for p in config.allow_from):
        # Kept for a human (`agentcom log`), never shown to the agent, never answered.
        return Tier0Decision(STORE, 3, "sender not on allow_from")
    return None


def _by_content(msg: Message) -> Tier0Decision | None:
    """Rows 4-7: pings and status requests answered, presence and notifications filed."""
    type_, action = fold(msg.type), msg.action
    # Loop guard: never answer a response or anything that is itself an auto-reply.
    answerable = type_ != "response" and action not in AUTO_REPLY_ACTIONS
    if answerable and (type_ == "ping" or action == "ping"):
        return Tier0Decision(AUTO_REPLY, 4, "ping", PONG)
    if answerable and action == "status":
        return Tier0Decision(AUTO_REPLY, 5, "status request", STATUS_REPLY)
    if type_ == "status":
        return Tier0Decision(STORE, 6, "presence update")
    for word in _NOTIFICATION_WORDS:
        if action == word or type_ == word:
            return Tier0Decision(STORE, 7, word)
    if fold(msg.payload.get("respond_with")) == "none":
        return Tier0Decision(STORE, 7, "respond_with none")
    return None


def _by_audience(msg: Message, config: Tier0Config) -> Tier0Decision:
    """Rows 8-9: broadcasts for capabilities we lack are dropped; everything else needs the agent."""
    if not msg.broadcast:
        return Tier0Decision(ATTENTION, 9, f"direct {fold(msg.type) or 'chat'}")
    needed = msg.needed_capabilities
    if not needed:
        return Tier0Decision(ATTENTION, 9, "broadcast")
    shared = needed & config.capabilities
    if not shared:
        return Tier0Decision(DROP, 8, "capability mismatch")
    return Tier0Decision(ATTENTION, 9, "broadcast matching capabilities: " + ", ".join(sorted(shared)))


def coalesce(candidates: Sequence[tuple[Message, Tier0Decision]]) -> list[tuple[Message, Tier0Decision]]:
    """One auto-reply per (sender, reply kind): the one answering its newest message.

    `candidates` are in the order the hub stored them; the older ones count as answered.
    """
    newest: dict[tuple[str, str | None], tuple[Message, Tier0Decision]] = {}
    for msg, decision in candidates:
        newest[(msg.sender, decision.reply)] = (msg, decision)
    return list(newest.values())


def attention_order(priority: str, broadcast: bool, arrival: int) -> tuple[int, int, int]:
    """Sort key: urgent, then high, then the rest; direct before broadcast; then arrival."""
    return (PRIORITY_RANK.get(priority, 2), 1 if broadcast else 0, arrival)


def auto_reply_payload(kind: str, status: str, capabilities: Sequence[str]) -> dict:
    if kind == PONG:
        return {"action": PONG, "status": status}
    return {"action": STATUS_REPLY, "status": status, "capabilities": list(capabilities)}
