"""Delivery bookkeeping: what one `check` or `ack` does to the state, without any I/O.

The skill always polls `since=0`: the hub keeps only unacked messages, so the batch
is the complete list of what is still at the hub. Everything here is decided by
message id against that list, which is what makes a hub whose seq counter went
backwards harmless (protocol part 4, guarantee 5).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .config import Settings
from .message import MailboxBatch, Message
from .state import AgentState
from .tier0 import ATTENTION, AUTO_REPLY, DISPOSITIONS, STORE, Tier0Config, Tier0Decision, attention_order, classify, coalesce

LOG_TEXT_LIMIT = 500
HAZARD_FILL = 0.8


@dataclass(frozen=True)
class AutoReply:
    to: str
    reply_to: str
    kind: str  # pong | status_reply


@dataclass
class CheckPlan:
    messages: list[dict[str, Any]] = field(default_factory=list)
    replies: list[AutoReply] = field(default_factory=list)
    handled: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DISPOSITIONS, 0))
    pending: int = 0
    warnings: list[str] = field(default_factory=list)
    changed: bool = False


def tier0_config(settings: Settings) -> Tier0Config:
    return Tier0Config.build(settings.agent_id, settings.capabilities, settings.ignore_from)


def plan_check(state: AgentState, batch: MailboxBatch, settings: Settings, now: float, limit: int | None = None) -> CheckPlan:
    """Classify new messages, lease the ones to return, and update `state` in place."""
    plan = CheckPlan()
    by_id = {m.id: m for m in batch.messages}
    config = tier0_config(settings)
    candidates: list[tuple[Message, Tier0Decision]] = []
    regressed_at: int | None = None

    for msg in batch.messages:
        if state.knows(msg.id):
            continue  # rule 1: already processed
        if state.cursor and msg.seq <= state.cursor and regressed_at is None:
            regressed_at = msg.seq
        decision = classify(msg, config)
        plan.changed = True
        if decision.disposition == ATTENTION:
            state.arrival += 1
            state.attention[msg.id] = {
                "seq": msg.seq,
                "why": decision.reason,
                "arrival": state.arrival,
                "deliveries": 0,
                "lease_until": 0,
                "priority": msg.priority,
                "broadcast": msg.broadcast,
            }
        elif decision.disposition == AUTO_REPLY:
            candidates.append((msg, decision))
        else:
            _finish(state, msg, decision, now, plan)

    if regressed_at is not None:
        plan.warnings.append(
            f"the hub's seq counter went backwards (new message at seq {regressed_at}, cursor was {state.cursor}): "
            "probably a hub restart; recovered by message id"
        )
    _plan_replies(state, candidates, settings, now, plan)
    if batch.messages:
        new_cursor = batch.messages[-1].seq
        plan.changed |= new_cursor != state.cursor
        state.cursor = new_cursor
    _lease(state, by_id, settings, now, limit, plan)
    if len(batch.messages) >= HAZARD_FILL * settings.mailbox_cap:
        plan.warnings.append(
            f"mailbox holds {len(batch.messages)} messages, {len(batch.messages) * 100 // settings.mailbox_cap}% "
            f"of the hub's cap of {settings.mailbox_cap}: the hub drops the oldest beyond it"
        )
    if plan.changed:
        state.trim(set(by_id), now)
    return plan


def _plan_replies(state: AgentState, candidates: list[tuple[Message, Tier0Decision]], settings: Settings, now: float, plan: CheckPlan) -> None:
    """Coalesce auto-replies and apply the per-sender budget; every candidate ends finished."""
    chosen = {id(pair[1]) for pair in coalesce(candidates)}
    for msg, decision in candidates:
        if id(decision) in chosen:
            sent = [t for t in state.replies.get(msg.sender, []) if t > now - 60]
            if len(sent) >= settings.auto_reply_limit:
                decision = Tier0Decision(STORE, decision.rule, f"{decision.reason}: auto-reply limit of {settings.auto_reply_limit}/min reached")
            else:
                state.replies[msg.sender] = sent + [now]
                plan.replies.append(AutoReply(to=msg.sender, reply_to=msg.id, kind=decision.reply or ""))
        else:
            decision = Tier0Decision(AUTO_REPLY, decision.rule, f"{decision.reason}: answered by the reply to a newer one")
        _finish(state, msg, decision, now, plan)


def _finish(state: AgentState, msg: Message, decision: Tier0Decision, now: float, plan: CheckPlan) -> None:
    """Record a Tier 0 disposition: finished, logged, and counted."""
    state.done[msg.id] = {"seq": msg.seq, "at": now}
    plan.handled[decision.disposition] += 1
    if decision.rule == 6:
        status = msg.payload.get("status")
        state.roster[msg.sender] = {
            "status": status if isinstance(status, str) else json.dumps(status, separators=(",", ":")),
            "timestamp": msg.timestamp,
            "seq": msg.seq,
            "at": now,
        }
    state.log.append(
        {
            "at": now,
            "seq": msg.seq,
            "id": msg.id,
            "from": msg.sender,
            "type": msg.type,
            "disposition": decision.disposition,
            "rule": decision.rule,
            "reason": decision.reason,
            "text": summary_text(msg)[:LOG_TEXT_LIMIT],
        }
    )


def _lease(state: AgentState, by_id: dict[str, Message], settings: Settings, now: float, limit: int | None, plan: CheckPlan) -> None:
    """Pick the attention messages to return now, lease them, dead-letter poison ones."""
    deliverable: list[tuple[str, dict[str, Any]]] = []
    for msg_id, entry in list(state.attention.items()):
        msg = by_id.get(msg_id)
        if msg is None:
            # Not at the hub any more: its cap or TTL deleted it before anyone acked it.
            del state.attention[msg_id]
            plan.changed = True
            plan.warnings.append(f"message seq {entry['seq']} ({msg_id}) vanished from the hub before it was acked (mailbox cap or TTL)")
            continue
        if entry["deliveries"] == 0:
            deliverable.append((msg_id, entry))
        elif entry["lease_until"] <= now:
            if entry["deliveries"] >= settings.max_deliveries:
                _dead_letter(state, msg, entry, now, plan)
            else:
                deliverable.append((msg_id, entry))
    deliverable.sort(key=lambda item: attention_order(item[1]["priority"], item[1]["broadcast"], item[1]["arrival"]))
    chosen = deliverable if limit is None else deliverable[: max(0, limit)]
    plan.pending = len(deliverable) - len(chosen)
    for msg_id, entry in chosen:
        entry["deliveries"] += 1
        entry["lease_until"] = now + settings.lease_seconds
        plan.changed = True
        redelivered = entry["deliveries"] > 1 or state.recovered
        plan.messages.append(message_view(by_id[msg_id], entry, redelivered))
    if chosen and state.recovered:
        state.recovered = False


def _dead_letter(state: AgentState, msg: Message, entry: dict[str, Any], now: float, plan: CheckPlan) -> None:
    del state.attention[msg.id]
    state.done[msg.id] = {"seq": msg.seq, "at": now}
    state.dead.append(
        {
            "at": now,
            "seq": msg.seq,
            "id": msg.id,
            "from": msg.sender,
            "type": msg.type,
            "deliveries": entry["deliveries"],
            "text": summary_text(msg)[:LOG_TEXT_LIMIT],
        }
    )
    plan.changed = True
    plan.warnings.append(
        f"dead-lettered message seq {msg.seq} ({msg.id}) from {msg.sender} after {entry['deliveries']} deliveries "
        "without ack; see `agentcom log --dead`"
    )


def message_view(msg: Message, entry: dict[str, Any], redelivered: bool) -> dict[str, Any]:
    """One returned message, in the `--json` shape."""
    return {
        "seq": msg.seq,
        "id": msg.id,
        "from": msg.sender,
        "to": msg.to,
        "type": msg.type,
        "text": msg.text,
        "payload": msg.payload,
        "reply_to": msg.reply_to,
        "timestamp": msg.timestamp,
        "broadcast": msg.broadcast,
        "priority": msg.priority,
        "redelivered": redelivered,
        "deliveries": entry["deliveries"],
        "why": entry["why"],
        "untrusted": True,
    }


def summary_text(msg: Message) -> str:
    """The text of a message, or its payload as one line of JSON when it has none."""
    if msg.text is not None:
        return msg.text
    return json.dumps(msg.payload, separators=(",", ":"), ensure_ascii=False)


def confirm_shown(state: AgentState, ids: list[str]) -> None:
    """The run that leased these messages did hand them out: `ack` may now finish them.

    A run killed between its lease and its output leaves them unconfirmed, so an `ack`
    of "everything returned" cannot finish a message nobody saw; it comes back after its
    lease instead.
    """
    for msg_id in ids:
        if msg_id in state.attention:
            state.attention[msg_id]["shown"] = True


def mark_acked(state: AgentState, seq: int | None, now: float) -> list[dict[str, Any]]:
    """The agent is done with every message handed out to it (up to `seq`): finish them."""
    acked = []
    for msg_id, entry in list(state.attention.items()):
        if entry.get("shown") and (seq is None or entry["seq"] <= seq):
            del state.attention[msg_id]
            state.done[msg_id] = {"seq": entry["seq"], "at": now}
            acked.append({"id": msg_id, "seq": entry["seq"]})
    acked.sort(key=lambda a: a["seq"])
    return acked


def hub_prefix(state: AgentState, batch: MailboxBatch) -> int | None:
    """The highest seq below which every message at the hub is finished (guarantee 4)."""
    up_to = None
    for msg in batch.messages:
        if msg.id not in state.done:
            break
        up_to = msg.seq
    return up_to
