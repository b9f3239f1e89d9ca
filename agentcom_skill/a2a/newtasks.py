"""New A2A tasks: the waiting messages A2A has not taken yet are grouped by conversation
(`plan.plan_dispatch`) and leased to new tasks, with the same rules as a check (`handoff`);
the loop guard holds a peer's messages back for `check`, and one already answered by hand
needs no model call."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .. import handoff
from ..a2a_tasks import A2ATasks
from ..config import Settings
from ..delivery import OpenMessage, StoreView
from ..store import MessageStore
from ..tier0 import attention_order
from ..untrusted import safe_msg_id, safe_sender
from ..wake import Report
from .plan import Batch, Candidate, context_id, group_context, loop_guard_note, plan_dispatch

REPLAN_INTERVAL = 30.0  # a dispatch decision that changed nothing is looked at again after this at most


class NewTasks:
    """Makes the new tasks of a dispatch step; remembers what it decided on, so that the
    same messages waiting for the same busy conversations are not planned again each step."""

    def __init__(self, settings: Settings, store: MessageStore, tasks: A2ATasks, report: Report):
        self.s = settings
        self.wake = settings.wake
        self.store = store
        self.tasks = tasks
        self.report = report
        self.reported_answered: set[str] = set()  # messages answered by hand, reported once
        self.warned_peers: dict[str, float] = {}  # the loop guard's one warning per peer and window
        self.last_plan_key: Any = None  # what the last dispatch decided on, and until when that holds
        self.replan_at = 0.0
        self.held = False  # the last make() held messages back (`status` counts them)

    def make(self, now: float) -> list[int]:
        """The tasks created now (their ids), in the order they go."""
        self.held = False
        # Cheap looks first: most steps find nothing new, or the same messages waiting for the
        # same busy conversations as last time (nothing to decide until one of them changes).
        waiting = self.store.deliverable_ids(now)
        handed = self.tasks.handed(waiting) if waiting else set()
        fresh = frozenset(i for i in waiting if i not in handed)
        if not fresh:
            return []
        key = (fresh, frozenset(t["id"] for t in self.tasks.open_tasks()))
        if key == self.last_plan_key and now < self.replan_at:
            return []
        created: list[int] = []
        with self.store.write():
            view = self.store.view([], now)
            open_tasks = self.tasks.open_tasks()
            deliverable = [
                o
                for o in view.open
                if o.msg is not None and (o.rec.state == "pending" or (o.rec.due is not None and o.rec.due <= now))
            ]
            if not deliverable:
                return []
            handed = self.tasks.handed([o.id for o in deliverable])
            unhanded = [o for o in deliverable if o.id not in handed]
            # One a person (or the agent) already answered with `agentcom reply` or `send
            # --reply-to` needs no model call: it waits for its `ack`.
            answered = (
                {
                    r["reply_to"]
                    for r in self.store.sent_messages(reply_to=[o.id for o in unhanded])
                    if r["kind"] in ("reply", "send")
                }
                if unhanded
                else set()
            )
            unhanded = [o for o in unhanded if o.id not in answered]
            if not unhanded:
                self.last_plan_key, self.replan_at = key, now + REPLAN_INTERVAL  # nothing to decide till they change
                self._report_answered(answered)
                return []
            candidates = self._candidates(unhanded, now)
            by_peer: dict[str, int] = {}
            for t in open_tasks:
                by_peer[t["peer"]] = by_peer.get(t["peer"], 0) + 1
            plan = plan_dispatch(
                candidates,
                {t["context_id"] for t in open_tasks},
                len(open_tasks),
                by_peer,
                self.tasks.answer_times(now - self.wake.answer_window),
                self.wake,
                now,
            )
            self.last_plan_key = key
            self.replan_at = min(plan.next_at or now + REPLAN_INTERVAL, now + REPLAN_INTERVAL)
            for peer, ids in plan.held.items():
                self.tasks.hold(ids, loop_guard_note(peer, self.wake))
            for batch in plan.batches:
                task = self._lease(view, batch, now)
                if task is not None:
                    created.append(task)
        self._report_held(plan.held, now)
        self._report_answered(answered)
        return created

    def _candidates(self, fresh: list[OpenMessage], now: float) -> list[Candidate]:
        """Waiting messages with their conversation (context) and the order they go in."""
        times = self.store.received_at([o.id for o in fresh])
        out = []
        for o in fresh:
            assert o.msg is not None
            root = self.store.thread_root(o.msg.reply_to, o.id) if self.wake.context == "thread" else None
            context = context_id(o.msg.sender, o.msg.broadcast, self.wake.context, root)
            peer = o.msg.sender
            if o.msg.channel is not None:  # one context per channel and one for the room; answered there
                peer, context = o.msg.channel, group_context(o.msg.channel)
            order = attention_order(o.msg.priority, o.msg.broadcast, o.rec.arrival)
            out.append(Candidate(o.id, peer, context, times.get(o.id, now), order))
        return out

    def _report_answered(self, answered: set[str]) -> None:
        """Messages already answered by hand are not handed over: say so once for each."""
        new = sorted(answered - self.reported_answered)
        if new:
            self.reported_answered.update(new)
            named = ", ".join(map(safe_msg_id, new[:5]))
            self.report(
                "a2a_answered_by_hand",
                f"{len(new)} message(s) already answered with `agentcom reply` ({named}):"
                " not handed to the A2A agent; `agentcom ack` finishes them",
                ids=new,
            )

    def _report_held(self, held: Mapping[str, Sequence[str]], now: float) -> None:
        """The loop guard held a peer's messages back: say so once per answer window."""
        for peer, ids in held.items():
            self.held = True
            if now - self.warned_peers.get(peer, -1e18) >= self.wake.answer_window:
                self.warned_peers[peer] = now
                self.report(
                    "a2a_held",
                    f"loop guard: {self.wake.answer_budget} automatic answers to {safe_sender(peer)} within "
                    f"{self.wake.answer_window / 60:g} min; its messages wait for `agentcom check` "
                    "(raise [wake] answer_budget if this is expected)",
                    peer=peer,
                    ids=list(ids),
                )

    def _lease(self, view: StoreView, batch: Batch, now: float) -> int | None:
        """Inside the dispatch transaction: lease the batch's messages to a new task (the same
        rules as a check: deliveries counted, poison messages dead-lettered)."""
        chosen = [o for o in view.open if o.id in batch.ids]
        leased = handoff.lease(self.store, self.s, view._replace(open=tuple(chosen)), now, len(chosen))
        for warning in leased.warnings:
            self.report("warning", warning)
        ids = leased.ids
        if not ids:
            return None
        order = {i: n for n, i in enumerate(batch.ids)}
        ids.sort(key=lambda i: order[i])
        return self.tasks.create(batch.peer, batch.context, ids[-1], f"unsent-{uuid.uuid4().hex}", leased.before, now)


__all__ = ["REPLAN_INTERVAL", "NewTasks"]
