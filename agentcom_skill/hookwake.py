"""The wake driver of the modes `agent`, `wake` and `command`: batched wakes by hook or command.

The watch's wake thread drives it as it drives the A2A dispatcher (`a2a.dispatcher`): `step()`
does what is due; `changed`, `status()` and `last_error` are what `status` shows of it. A wake
is a delivery: its messages are leased and shown as a check's (`handoff`), shown from the
moment the prompt is handed over (the agent may `ack` while the command or its turn runs),
and put back as they were when the wake failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import handoff
from .config import Settings
from .render import render_prompt
from .store import MessageStore
from .wake import Report, WakeBatcher, WakeFailures, Waker

WAKE_FOOTER = (
    '[AgentCom] Answer with `agentcom reply SEQ|ID "..."`; when a message is handled, '
    "`agentcom ack SEQ|ID`. Unacked ones come back later."
)


class HookWakeDriver:
    """Wakes the agent through the gateway's hooks or a command when messages wait: one wake
    for a burst (`WakeBatcher`), backoff after a failure, a pause after a refused token."""

    def __init__(
        self,
        settings: Settings,
        store: MessageStore,
        report: Report,
        clock: Callable[[], float] = time.time,
        waker: Waker | None = None,
        wakes_sent: int = 0,
    ):
        self.s = settings
        self.wake = settings.wake
        self.store = store
        self.report = report
        self.clock = clock
        self.waker = waker or Waker(self.wake)
        self.batcher = WakeBatcher(self.wake.window, self.wake.min_interval)
        self.failures = WakeFailures(self.wake, report)
        self.wakes_sent = wakes_sent
        self.changed = False

    @property
    def last_error(self) -> dict[str, Any] | None:
        return self.failures.last

    def status(self) -> dict[str, Any]:
        return {"wakes_sent": self.wakes_sent, "last_wake_error": self.failures.last}

    def step(self) -> None:
        store, now = self.store, self.clock()
        self.batcher.note_waiting(now, store.deliverable_count(now))
        due = self.batcher.due_at()
        if due is None or now < due or self.failures.paused(now):
            return
        leased = handoff.lease_due(store, self.s, now, self.wake.max_batch)
        for warning in leased.warnings:
            self.report("warning", warning)
        if not leased.messages:
            self.batcher.note_waiting(now, 0)
            return
        ids = leased.ids
        result = {
            "agent_id": self.s.agent_id,
            "messages": leased.messages,
            "handled": {},
            "pending": leased.pending,
            "warnings": [],
        }
        prompt = render_prompt(result, self.s.prompt_text_limit) + "\n" + WAKE_FOOTER
        handed_over = self.wake.mode != "wake"  # the prompt itself goes to the agent (a notice does not)
        if handed_over:
            handoff.confirm(store, ids)
        outcome = self.waker.send(prompt, ids, [m["deliveries"] for m in leased.messages])
        if outcome.kind == "ok":
            if not handed_over:
                handoff.confirm(store, ids)
            self.batcher.woke(now)
            self.wakes_sent += 1
            self.failures.cleared(now)
            self.changed = True
            self.report("woke", f"woke the agent ({self.wake.mode}) with {len(ids)} message(s)", ids=ids)
            return
        # Not delivered: `check` and the next wake return them.
        handoff.restore(store, leased, shown=handed_over)
        self.changed = True
        if outcome.kind == "unauthorized":
            self.failures.refused_token(now, outcome)
            return
        self.failures.failed(now, outcome)
        # refused (a 4xx): the settings are wrong, so retrying soon cannot help
        delay = self.batcher.failed(now, 60.0 if outcome.kind == "refused" else outcome.retry_after)
        self.report("wake_failed", f"wake failed: {outcome.detail}; retrying in {delay:.1f} s")

    def retry_now(self) -> None:
        """SIGHUP with the same [wake]: a wake held back (paused, backing off) is tried now."""
        self.failures.resume()
        self.batcher.not_before, self.batcher.failures = 0.0, 0

    def close(self) -> None:
        pass


__all__ = ["HookWakeDriver", "WAKE_FOOTER"]
