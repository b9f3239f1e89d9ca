"""Delivery decisions: what one `check`, `ack`, `defer` or `dismiss` changes, without any I/O.

Everything here is a pure function of what the hub sent, a snapshot of the local store
(`StoreView`), the settings and the time; it returns what to change (`CheckPlan`) and the
store (`store.py`) applies it in one transaction. Decisions are made by message id, never
by seq: the skill polls `since=0` (the hub keeps only unacked messages), so a hub whose seq
counter went backwards is harmless (protocol part 4, guarantee 5).

Message states (the `state` column):

    pending   attention, never returned yet
    leased    returned by a run that has not yet printed it (a crash there loses nothing)
    shown     returned and printed; `due` is when its lease ends and it comes back
    deferred  the agent said "later"; `due` is when it comes back (not a failed delivery)
    done      acked by the agent, or handled by Tier 0 (auto_reply, store, drop)
    dismissed finished by the agent without action
    dead      returned `max_deliveries` times without ack (a poison message)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from .message import MailboxBatch, Message, Unreadable

if TYPE_CHECKING:  # for the annotations only: the pure core imports no shell
    from .config import Settings
from .tier0 import (
    ATTENTION,
    AUTO_REPLY,
    DISPOSITIONS,
    STORE,
    Tier0Config,
    Tier0Decision,
    attention_order,
    classify,
    coalesce,
)

OPEN_STATES = ("pending", "leased", "shown", "deferred")
FINISHED_STATES = ("done", "dismissed", "dead")
STATES = OPEN_STATES + FINISHED_STATES
HAZARD_FILL = 0.8
# A lease or defer never ends later than its length from now (its `span`, kept beside its
# `due`): one that ends further off was taken while the clock ran ahead and has since been
# set back, and is over at once (`bounded_due`). The slack covers runs that read the time a
# little apart (a check reads it before its poll, up to `request_deadline` earlier than it
# decides, while another run leases); a clock set back by less than this is not noticed.
CLOCK_SLACK = 600.0
LONGEST_SPAN = 366 * 86400.0  # a due kept before spans were (schema 5): the longest defer
REPLY_WINDOW = 60.0  # seconds of the per-sender auto-reply budget


class Record(NamedTuple):
    """The delivery state of one stored attention message."""

    state: str
    deliveries: int = 0  # times returned
    expired: int = 0  # leases that ran out without ack, defer or dismiss
    due: float | None = None  # lease or defer end
    ever_shown: bool = False  # printed to the agent at least once: `ack` may finish it
    arrival: int = 0  # local arrival order
    why: str = ""
    span: float | None = None  # the length of the lease or defer that set `due` (None: not known)

    @property
    def lease_ran_out(self) -> bool:
        return self.state in ("leased", "shown")


def bounded_due(due: float | None, span: float | None, now: float) -> float | None:
    """When a lease or defer ends, seen at `now`: `due`, unless that is further off than its
    length (`span`, plus CLOCK_SLACK) allows, when the clock was set back since it was taken:
    then it is over now (it comes back at once rather than after the clock's jump)."""
    if due is None:
        return None
    return now if due > now + (LONGEST_SPAN if span is None else span) + CLOCK_SLACK else due


class OpenMessage(NamedTuple):
    """An unfinished attention message with its body (None: an imported stub, body never seen)."""

    id: str
    seq: int | None
    msg: Message | None
    rec: Record


class StoreView(NamedTuple):
    """What a check needs to know of the store, read in one transaction."""

    known: frozenset[str] = frozenset()  # ids of the batch already stored
    open: tuple[OpenMessage, ...] = ()
    reply_times: Mapping[str, Sequence[float]] = MappingProxyType({})  # sender -> auto-reply times
    cursor: int = 0
    recovered: bool = False  # the store was rebuilt: the next deliveries count as redelivered
    groups: tuple[tuple[str, str], ...] = ()  # joined channels and the room, with their attention setting
    ours: frozenset[str] = frozenset()  # ids (of the batch, or its reply_to) of messages we sent
    # A store's view holds only what a check may act on: `unloaded` counts the deliverable
    # messages left out (each ranks after every one in `open`), and `leases` is (messages in
    # their lease, the first lease end), counted by the store. None: count them from `open`.
    unloaded: int = 0
    leases: tuple[int, float | None] | None = None


class AutoReply(NamedTuple):
    to: str
    reply_to: str
    kind: str  # pong | status_reply


class Lease(NamedTuple):
    id: str
    deliveries: int
    expired: int
    due: float


class CheckPlan:
    """What one check changes and returns. Applied by `MessageStore.apply_check`.

    (A plain class, filled in by `plan_check`: a dataclass's generated code would cost more
    at import, on every command's path, than it saves here.)"""

    def __init__(self) -> None:
        self.new: list[tuple[Message, Tier0Decision]] = []  # final dispositions
        self.unreadable: list[Unreadable] = []  # set aside as poison, finished at once
        self.replies: list[AutoReply] = []
        self.leases: list[Lease] = []
        self.dead: list[str] = []
        self.lost: list[str] = []  # imported stubs whose body is gone from the hub
        self.cursor: int | None = None
        self.clear_recovered = False
        self.messages: list[dict[str, Any]] = []
        self.handled: dict[str, int] = dict.fromkeys(DISPOSITIONS, 0)
        self.pending = 0
        self.in_lease = 0
        self.next_due: float | None = None
        self.warnings: list[str] = []

    @property
    def changes(self) -> bool:
        return bool(
            self.new
            or self.unreadable
            or self.leases
            or self.dead
            or self.lost
            or self.cursor is not None
            or self.clear_recovered
        )


def tier0_config(settings: Settings, groups: Iterable[tuple[str, str]] = ()) -> Tier0Config:
    return Tier0Config.build(
        settings.agent_id, settings.capabilities, settings.ignore_from, settings.allow_from, groups
    )


def plan_check(
    batch: MailboxBatch, view: StoreView, settings: Settings, now: float, limit: int | None = None
) -> CheckPlan:
    """Classify new messages, pick what to return now, and say what to change."""
    plan = CheckPlan()
    config = tier0_config(settings, view.groups)
    candidates: list[tuple[Message, Tier0Decision]] = []
    regressed_at: int | None = None
    new_attention: list[OpenMessage] = []
    seen: set[str] = set()
    for msg in batch.messages:
        if msg.id in view.known or msg.id in seen:
            continue  # rule 1: already processed
        seen.add(msg.id)
        if view.cursor and msg.seq is not None and msg.seq <= view.cursor and regressed_at is None:
            regressed_at = msg.seq
        decision = classify(msg, config, ours=view.ours)
        if decision.disposition == AUTO_REPLY:
            candidates.append((msg, decision))
            continue
        plan.new.append((msg, decision))
        if decision.disposition == ATTENTION:
            arrival = (1 << 62) + len(plan.new)  # after everything already stored
            new_attention.append(
                OpenMessage(msg.id, msg.seq, msg, Record("pending", arrival=arrival, why=decision.reason))
            )
        else:
            plan.handled[decision.disposition] += 1
    for item in batch.unreadable:
        if item.key in view.known or item.key in seen:
            continue
        seen.add(item.key)
        plan.unreadable.append(item)
        plan.warnings.append(
            f"set aside {_unreadable_label(item)}, which cannot be read ({item.reason}); kept for a person"
            " in `agentcom inbox --state dead` and acked past at the hub"
        )
    if regressed_at is not None:
        plan.warnings.append(
            f"the hub's seq counter went backwards (new message at seq {regressed_at}, cursor was {view.cursor}): "
            "probably a hub restart; recovered by message id"
        )
    _plan_replies(candidates, view.reply_times, settings.auto_reply_limit, now, plan)
    order = {m.id: i for i, m in enumerate(batch.messages)}
    plan.new.sort(key=lambda pair: order[pair[0].id])  # stored (and logged) in the hub's order
    if batch.messages and batch.messages[-1].seq != view.cursor:
        plan.cursor = batch.messages[-1].seq
    _plan_leases(batch, [*view.open, *new_attention], view, settings, now, limit, plan)
    if not batch.complete:
        plan.warnings.append(
            f"the mailbox's reply is over max_response_bytes ({settings.max_response_bytes} bytes): took the"
            f" {len(batch.entries)} message(s) that fit; the rest wait at the hub until these are finished"
            " (or raise max_response_bytes)"
        )
    if len(batch.entries) >= HAZARD_FILL * settings.mailbox_cap:  # what the hub holds (pushed frames: none)
        plan.warnings.append(
            f"mailbox holds {len(batch.messages)} messages, {len(batch.messages) * 100 // settings.mailbox_cap}% "
            f"of the hub's cap of {settings.mailbox_cap}: the hub drops the oldest beyond it"
        )
    return plan


def _plan_replies(
    candidates, reply_times: Mapping[str, Sequence[float]], budget: int, now: float, plan: CheckPlan
) -> None:
    """Coalesce auto-replies and apply the per-sender budget; every candidate ends finished."""
    chosen = {id(pair[1]) for pair in coalesce(candidates)}
    spent = {sender: sum(1 for t in times if t > now - REPLY_WINDOW) for sender, times in reply_times.items()}
    for msg, decision in candidates:
        if id(decision) in chosen:
            if spent.get(msg.sender, 0) >= budget:
                decision = Tier0Decision(
                    STORE, decision.rule, f"{decision.reason}: auto-reply limit of {budget}/min reached"
                )
            else:
                spent[msg.sender] = spent.get(msg.sender, 0) + 1
                plan.replies.append(AutoReply(to=msg.sender, reply_to=msg.id, kind=decision.reply or ""))
        else:
            decision = Tier0Decision(
                AUTO_REPLY, decision.rule, f"{decision.reason}: answered by the reply to a newer one"
            )
        plan.new.append((msg, decision))
        plan.handled[decision.disposition] += 1


def _plan_leases(
    batch: MailboxBatch,
    open_messages: list[OpenMessage],
    view: StoreView,
    settings: Settings,
    now: float,
    limit: int | None,
    plan: CheckPlan,
) -> None:
    """Pick the attention messages to return now, lease them, dead-letter poison ones."""
    at_hub = {m.id: m for m in batch.messages}
    deliverable: list[tuple[Message, OpenMessage]] = []  # each with its body (from the store or the hub)
    for item in open_messages:
        rec = item.rec
        msg = item.msg or at_hub.get(item.id)
        if msg is None:
            plan.lost.append(item.id)
            plan.warnings.append(
                f"message seq {item.seq} was kept by an older agentcom without its text and is no longer at the hub"
            )
            continue
        if rec.state in ("pending",) or (rec.due is not None and rec.due <= now):
            expired = rec.expired + (1 if rec.lease_ran_out else 0)
            if rec.lease_ran_out and expired >= settings.max_deliveries:
                plan.dead.append(item.id)
                plan.warnings.append(
                    f"dead-lettered message seq {msg.seq} after {rec.deliveries} deliveries without ack; see "
                    f"`agentcom inbox --state dead`"
                )
                continue
            record = Record(rec.state, rec.deliveries, expired, rec.due, rec.ever_shown, rec.arrival, rec.why)
            deliverable.append((msg, OpenMessage(item.id, item.seq, msg, record)))
        elif rec.state in ("leased", "shown") and view.leases is None:
            plan.in_lease += 1
            plan.next_due = rec.due if plan.next_due is None else min(plan.next_due, rec.due or now)
    if view.leases is not None:
        plan.in_lease, plan.next_due = view.leases
    deliverable.sort(key=lambda pair: attention_order(pair[0].priority, pair[0].broadcast, pair[1].rec.arrival))
    chosen = deliverable if limit is None else deliverable[: max(0, limit)]
    plan.pending = len(deliverable) - len(chosen) + view.unloaded
    recovered = view.recovered
    for msg, item in chosen:
        deliveries = item.rec.deliveries + 1
        plan.leases.append(Lease(item.id, deliveries, item.rec.expired, now + settings.lease_seconds))
        plan.messages.append(message_view(msg, item.rec.why, deliveries, deliveries > 1 or recovered))
    if chosen and recovered:
        plan.clear_recovered = True


def message_view(msg: Message, why: str, deliveries: int, redelivered: bool) -> dict[str, Any]:
    """One returned message, in the `--json` shape (with `channel` only when it was said in a
    channel or the room)."""
    view = {
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
        "deliveries": deliveries,
        "why": why,
        "untrusted": True,
    }
    where = msg.channel
    if where is not None:
        view["channel"] = where
    return view


def summary_text(msg: Message) -> str:
    """The text of a message, or its payload as one line of JSON when it has none."""
    if msg.text is not None:
        return msg.text
    return json.dumps(msg.payload, separators=(",", ":"), ensure_ascii=False)


def _unreadable_label(item: Unreadable) -> str:
    """How a warning names a message it could not read: never its sender or an id that does not
    look like one (warnings reach an LLM outside the fence)."""
    if item.seq is not None:
        return f"message seq {item.seq}"
    if item.id is not None and len(item.id) == 16 and all(c in "0123456789abcdef" for c in item.id):
        return f"message {item.id}"
    return "a message"


def batch_keys(batch: MailboxBatch) -> list[str]:
    """The keys the store knows a batch's entries by: message ids, and unreadable ones' keys."""
    keys = [m.id for m in batch.messages]
    keys += [u.key for u in batch.unreadable]
    return keys


def hub_prefix(batch: MailboxBatch, finished: Iterable[str]) -> int | None:
    """The highest seq below which every entry at the hub is finished (guarantee 4); a second
    copy of an id counts as finished with it."""
    done = set(finished)
    entries = batch.entries or tuple((m.seq, m.id) for m in batch.messages if m.seq is not None)
    up_to = None
    for seq, key in entries:
        if key not in done:
            break
        up_to = seq
    return up_to
