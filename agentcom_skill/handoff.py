"""The lease hand-off of the wakes: lease a batch → hand it over → confirm it shown, or restore it.

A wake (a gateway hook, a command, an A2A task) is a delivery, as a check's output is: its
messages are leased by the same rules as a check's (deliveries counted, poison messages
dead-lettered: `delivery.plan_check` over an empty mailbox), marked shown once the agent has
them (so its `ack` works), and put back exactly as they were when the hand-over failed.
(`run_check` leases as part of a whole check, with what the hub sent, in one transaction; its
confirmation is `skill._confirm`, after the output.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from .config import Settings
from .delivery import Record, StoreView, plan_check
from .message import MailboxBatch
from .store import MessageStore

NO_MAIL = MailboxBatch([], 0)  # a hand-off takes what the store holds, nothing new from the hub


class Leased(NamedTuple):
    """A batch leased for one hand-over."""

    messages: list[dict[str, Any]]  # as a check returns them, in attention order
    pending: int  # attention messages left waiting
    before: dict[str, Record]  # how each leased message stood, to undo a failed hand-over exactly
    warnings: list[str]  # said by the plan (dead letters, ...)

    @property
    def ids(self) -> list[str]:
        return [m["id"] for m in self.messages]


def lease(store: MessageStore, s: Settings, view: StoreView, now: float, limit: int) -> Leased:
    """Inside `store.write()`: lease up to `limit` of the open messages of `view` (a view read
    in the same transaction, or a part of one) for a hand-over."""
    plan = plan_check(NO_MAIL, view, s, now, limit)
    store.apply_check(plan, now)
    leased = {lease.id for lease in plan.leases}
    before = {o.id: o.rec for o in view.open if o.id in leased}
    return Leased(plan.messages, plan.pending, before, plan.warnings)


def lease_due(store: MessageStore, s: Settings, now: float, limit: int) -> Leased:
    """Lease the first `limit` deliverable messages, in one write transaction of its own."""
    with store.write():
        return lease(store, s, store.view([], now, limit), now, limit)


def confirm(store: MessageStore, ids: Sequence[str]) -> None:
    """Handed over: shown, so the agent's `ack` (or `reply`) works on them now."""
    with store.write():
        store.confirm_shown(ids)


def restore(store: MessageStore, leased: Leased, shown: bool) -> None:
    """Not delivered: back as they were, for `check` and the next wake (those finished meanwhile
    stay finished; with `shown`, those confirmed at the hand-over are put back too)."""
    with store.write():
        store.restore(leased.before, shown=shown)


__all__ = ["Leased", "confirm", "lease", "lease_due", "restore"]
