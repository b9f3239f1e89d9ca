"""`A2ADispatcher`: the shell of the A2A wing. The watch's wake thread calls `step()`, which
advances the open tasks (send, poll, deliver the answer, retry or fail), makes new ones
(`newtasks`), and probes the endpoint first; what it decides is committed to the store (the
task table, `a2a_tasks`) before the request that depends on it."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..a2a_tasks import A2ATasks
from ..actions.common import unconfirmed_id
from ..actions.history import history_entry
from ..config import Settings
from ..errors import AgentComError, PossiblyDelivered, UsageError
from ..store import MessageStore
from ..untrusted import one_line, safe_msg_id, safe_sender
from ..wake import Report, WakeFailures, WakeOutcome
from .answers import ANSWER_KEY, MAYBE_ANSWERED, ack_carried, answer_at_hub, post_answer
from .client import FAILED_STATES, WORKING_STATES, A2AClient, A2AReply
from .newtasks import NewTasks
from .pacer import BACKOFF_MAX, RequestPacer
from .plan import (
    MAX_ATTEMPTS,
    NO_REPLY,
    answer_action,
    fair_order,
    is_error_completion,
    poll_delay,
    prompt_text,
    retry_delay,
)

if TYPE_CHECKING:
    from ..actions.common import Hub

LEASE_CHECK_INTERVAL = 5.0
PRUNE_INTERVAL = 3600.0
PROBE_ID = "agentcom-probe"
QUOTE_NOTE = " (what the agent said: `agentcom log`)"


def _said(quoted: str | None) -> dict[str, str]:
    """What the agent said, as an event's own field (never in its text, which `status` and
    `check` quote as the watch's last event): neutralised, on one line, cut."""
    return {"said": one_line(quoted, 300)} if quoted else {}


class A2ADispatcher:
    """Runs in the watch's wake thread; `step()` does what is due and returns quickly (each
    request is bounded by `[wake] timeout`). Everything it decides is committed to the store
    before the request that depends on it, so a restart (even `kill -9`) resumes, never repeats."""

    def __init__(
        self,
        settings: Settings,
        store: MessageStore,
        hub: Hub,
        report: Report,
        clock: Callable[[], float] = time.time,
        client: A2AClient | None = None,
        rng: random.Random | None = None,
    ):
        self.s = settings
        self.wake = settings.wake
        self.store = store
        self.tasks = A2ATasks(store)
        self.hub = hub
        self.report = report
        self.clock = clock
        assert self.wake.url is not None
        self.client = client or A2AClient(self.wake.url, self.wake.token, self.wake.timeout)
        self.pacer = RequestPacer(self.wake.requests_per_minute, rng)
        self.rng = rng or random.Random()
        self.ready = False  # the endpoint answered a probe with our token
        self.next_probe = 0.0
        self.probe_failures = 0
        self.failures = WakeFailures(self.wake, report)  # the last error, the pause, problems said once
        self.new_tasks = NewTasks(settings, store, self.tasks, report)
        self.lease_checked_at = 0.0
        self.pruned_at = 0.0
        self.changed = True  # something happened that `status` shows (at start: what a previous run left)
        self.served: dict[str, int] = {}  # the turn at which each peer's last request went (fair_order)
        self.turn = 0

    @property
    def last_error(self) -> dict[str, Any] | None:
        return self.failures.last

    def status(self) -> dict[str, Any]:
        """Its fields of watch.json."""
        return {"a2a": self.tasks.summary(), "last_wake_error": self.failures.last}

    def retry_now(self) -> None:
        """SIGHUP with the same [wake]: a pause after a refused token ends now."""
        self.failures.resume()

    # one step ------------------------------------------------------------------

    def step(self) -> None:
        now = self.clock()
        open_tasks = self.tasks.open_tasks()
        if now - self.lease_checked_at >= LEASE_CHECK_INTERVAL:
            self.lease_checked_at = now
            if open_tasks:
                with self.store.write():
                    self.tasks.extend_leases(now, self.s.lease_seconds)
        if now - self.pruned_at >= PRUNE_INTERVAL:
            self.pruned_at = now
            with self.store.write():
                self.tasks.prune(now, self.s.retention_days)
        if self.failures.paused(now):
            return
        if not self.ready:
            if now >= self.next_probe:
                self._probe(now)
            return
        due = [t for t in open_tasks if t["next_at"] <= now]
        for index in fair_order([t["peer"] for t in due], self.served):
            if not self._advance(due[index], now):
                return  # paced or refused: the rest waits too
        self._dispatch(now)

    def _probe(self, now: float) -> None:
        """A GetTask for a task that cannot exist: -32001 means the endpoint and our token work."""
        if self.pacer.wait(now) > 0:
            return
        self.pacer.note(now)
        reply = self.client.get_task(f"{PROBE_ID}-{uuid.uuid4().hex[:8]}")
        if reply.kind in ("lost", "task"):
            self.ready, self.probe_failures = True, 0
            self.failures.reported.discard("unreachable")
            self.report("a2a_ready", f"A2A endpoint {self.wake.url} answers and accepts our token")
            self._resolved(now)
            return
        if reply.kind == "unauthorized":
            self._unauthorized(now, reply)
            return
        self.probe_failures += 1
        delay = self.rng.uniform(0, min(BACKOFF_MAX, 2.0**self.probe_failures))
        self.next_probe = now + delay
        self._failure_once(
            "unreachable",
            now,
            WakeOutcome(
                "retry", f"A2A endpoint {self.wake.url} not usable yet: {reply.detail}", status=reply.detail[:40]
            ),
            f"{reply.detail}; retrying (messages wait for `agentcom check` meanwhile)",
        )

    # one task ----------------------------------------------------------------------

    def _advance(self, task: Any, now: float) -> bool:
        """Do what is due for one open task; False when the pacer or a refusal says stop for now."""
        if task["state"] == "answering":
            self._deliver(task, now)
            return True
        wait = self.pacer.wait(now)
        if wait > 0:
            return False
        self.turn += 1
        self.served[task["peer"]] = self.turn
        if task["state"] == "sending":
            return self._send(task, now)
        return self._poll(task, now)

    def _send(self, task: Any, now: float) -> bool:
        tid = task["id"]
        if task["sent_at"] is not None and task["attempts"] >= MAX_ATTEMPTS:
            self._fail(tid, now, "lost", f"the agent never confirmed the task ({task['attempts']} sends)")
            return True
        if task["sent_at"] is not None:
            self.report(
                "a2a_lost",
                f"task {tid}: no answer to the last send (connection lost or watch restarted); "
                "sending once more with a new messageId (the agent may see it twice)",
                task=tid,
            )
        message_id = f"agentcom-{uuid.uuid4().hex}"
        ids = self.tasks.carried(tid)
        messages = self._views(ids)
        if not messages:  # finished meanwhile (acked by the agent, or pruned): nothing to ask
            with self.store.write():
                self.tasks.update(tid, state="done", outcome="no_reply", finished_at=now, error="nothing left to send")
            return True
        text = prompt_text(messages, self.s.agent_id, self.s.prompt_text_limit)
        with self.store.write():  # committed before the request: a crash after it counts as a send
            self.tasks.update(tid, message_id=message_id, sent_at=now, attempts=task["attempts"] + 1)
        self.pacer.note(now)
        reply = self.client.send_message(text, task["context_id"], message_id)
        now = self.clock()
        if reply.kind == "task":
            with self.store.write():
                self.tasks.update(
                    tid, task_id=reply.task_id, state="working", accepted_at=now, polls=0, next_at=now + poll_delay(0)
                )
                self.store.confirm_shown(ids)  # delivered: `ack` and `reply` work on them now
            self.pacer.accepted()
            self.changed = True
            self.report(
                "a2a_task",
                f"task {tid} sent to the agent: {len(ids)} message(s) from {safe_sender(task['peer'])}",
                task=tid,
                ids=ids,
                context=task["context_id"],
            )
            self._resolved(now)
            if reply.state not in WORKING_STATES:
                return self._on_task_state(self.tasks.task(tid), reply, now)
            return True
        if reply.kind == "maybe_sent":  # sent again (a new messageId) after a backoff, within MAX_ATTEMPTS
            with self.store.write():
                self.tasks.update(tid, next_at=now + retry_delay(task["attempts"] + 1, self.rng), error=reply.detail)
            return True
        if reply.kind == "error" or reply.kind == "lost":
            self._fail(tid, now, "failed", f"the agent refused the task: {reply.detail}", reply.quoted)
            return True
        # It never reached the agent: undo the task; its messages are back for `check` and a later task.
        with self.store.write():
            self.tasks.release(tid)
        if reply.kind == "unauthorized":
            self._unauthorized(now, reply)
        elif reply.kind == "rate_limited":
            delay = self.pacer.refused(now, reply.retry_after)
            self._rate_limited(reply, delay)
        else:
            delay = self.pacer.backoff(now, reply.retry_after)
            self._failure_once(
                "unreachable",
                now,
                WakeOutcome("retry", f"A2A endpoint {self.wake.url}: {reply.detail}", status=reply.detail[:40]),
                f"{reply.detail}; retrying in {delay:.0f} s (messages wait for `agentcom check` meanwhile)",
            )
        return False

    def _rate_limited(self, reply: A2AReply, delay: float) -> None:
        learned = f"; pacing at {self.pacer.learned} requests a minute" if self.pacer.learned is not None else ""
        self.report("a2a_rate_limited", f"the agent rate-limits us ({reply.detail}); waiting {delay:.0f} s{learned}")

    def _poll(self, task: Any, now: float) -> bool:
        tid = task["id"]
        self.pacer.note(now)
        reply = self.client.get_task(task["task_id"])
        now = self.clock()
        if reply.kind == "task":
            self.pacer.accepted()
            return self._on_task_state(task, reply, now)
        if reply.kind == "lost":
            self._retry(task, now, "lost", "the agent no longer knows the task (its gateway restarted?)")
            return True
        if reply.kind == "rate_limited":
            delay = self.pacer.refused(now, reply.retry_after)
            self._rate_limited(reply, delay)
            return False
        if reply.kind == "unauthorized":
            self._unauthorized(now, reply)
            self._timed_out(task, now)
            return False
        # unreachable or unreadable: the task may still run; look again later, within its timeout
        if self._timed_out(task, now):
            return True
        delay = self.pacer.backoff(now, reply.retry_after)
        with self.store.write():
            self.tasks.update(tid, next_at=now + delay, error=reply.detail)
        return True

    def _on_task_state(self, task: Any, reply: A2AReply, now: float) -> bool:
        tid = task["id"]
        if reply.state in WORKING_STATES:
            if self._timed_out(task, now):
                return True
            with self.store.write():
                self.tasks.update(tid, polls=task["polls"] + 1, next_at=now + poll_delay(task["polls"] + 1))
            return True
        if reply.state == "TASK_STATE_COMPLETED":
            if is_error_completion(reply.text):  # an error reported as the turn's text: never sent to the peer
                self._retry(task, now, "failed", "the agent's turn ended in an error instead of an answer", reply.text)
                return True
            with self.store.write():  # the answer is kept before it is sent: a restart delivers it
                self.tasks.update(tid, state="answering", answer=reply.text or "", next_at=now)
            task = self.tasks.task(tid)
            self._deliver(task, now)
            return True
        if reply.state == "TASK_STATE_FAILED":  # often passing (a gateway just started, a model error)
            self._retry(task, now, "failed", "the agent's task failed", reply.text)
            return True
        outcome = FAILED_STATES.get(str(reply.state))
        if outcome is not None:
            self._fail(tid, now, outcome, f"the agent's task ended {outcome}", reply.text)
        else:
            said = f"{reply.state}: {reply.text}" if reply.text else str(reply.state)
            self._fail(tid, now, "failed", "the agent's task ended in a state agentcom does not know", said)
        return True

    def _timed_out(self, task: Any, now: float) -> bool:
        started = task["accepted_at"] or task["sent_at"] or task["created_at"]
        if now - started <= self.wake.task_timeout:
            return False
        self._fail(task["id"], now, "timeout", f"no answer within task_timeout ({self.wake.task_timeout:g} s)")
        return True

    def _retry(self, task: Any, now: float, outcome: str, detail: str, quoted: str | None = None) -> None:
        """A task that failed for what may be a passing reason is sent again (a new messageId)
        after a backoff, up to MAX_ATTEMPTS sends; then its messages go back to `check`."""
        tid, attempts = task["id"], task["attempts"]
        if attempts >= MAX_ATTEMPTS:
            self._fail(tid, now, outcome, f"{detail} ({attempts} attempts)", quoted)
            return
        delay = retry_delay(attempts, self.rng)
        with self.store.write():
            self.tasks.update(
                tid,
                state="sending",
                task_id=None,
                sent_at=None,
                accepted_at=None,
                answer=None,
                polls=0,
                next_at=now + delay,
                error=detail,
                said=quoted[:1000] if quoted else None,
            )
        self.changed = True
        self.report(
            "a2a_lost" if outcome == "lost" else "a2a_retry",
            f"task {tid}: {detail}; sending it again in {delay:.0f} s "
            f"(attempt {attempts + 1} of {MAX_ATTEMPTS}; the agent may see the message twice)",
            task=tid,
            **_said(quoted),
        )

    def _deliver(self, task: Any, now: float) -> None:
        """The agent's answer goes back to the sender (unless it said NO_REPLY or already
        answered with `agentcom reply`), then the messages are finished. The answer's identity
        (`answer_key`, also in its payload) is committed before its POST: after a crash during
        the POST, the hub is asked whether it arrived, and where it cannot say, the answer
        counts as possibly sent and is never sent again."""
        tid = task["id"]
        ids = self.tasks.carried(tid)
        replied = bool([r for r in self.store.sent_messages(reply_to=[task["reply_to"]]) if r["kind"] != "auto_reply"])
        action = answer_action(task["answer"], replied)
        if action == "error":  # kept by an older agentcom, which took it for an answer
            self._retry(task, now, "failed", "the agent's turn ended in an error instead of an answer", task["answer"])
            return
        outcome = {"send": "answered", "no_reply": "no_reply", "replied_already": "replied_already"}[action]
        sent_id: str | None = None
        payload: dict[str, Any] = {}
        if action == "send":
            posted = self._post_answer(task, now)
            if posted is None:
                return  # retried later, or failed
            outcome, sent_id, payload = posted
        with self.store.write():
            if sent_id is not None:
                self.store.record_sent(sent_id, task["peer"], "response", payload, task["reply_to"], "a2a_answer", now)
            self.store.finish(ids, "done", now)
            self.tasks.update(
                tid,
                state="done",
                outcome=outcome,
                sent_id=sent_id,
                finished_at=now,
                error=MAYBE_ANSWERED if outcome == "maybe_answered" else None,
            )
        self.failures.reported.discard("hub")
        self.changed = True
        if outcome == "answered":
            self.report(
                "a2a_answered",
                f"task {tid}: the agent's answer sent to {safe_sender(task['peer'])} "
                f"(reply to {safe_msg_id(task['reply_to'])}); {len(ids)} message(s) done",
                task=tid,
                ids=ids,
                sent_id=sent_id,
            )
        elif outcome == "maybe_answered":
            detail = f"task {tid}: the answer to {safe_msg_id(task['reply_to'])} {MAYBE_ANSWERED}"
            self._set_error(
                now,
                WakeOutcome("retry", detail, status="maybe_answered"),
                f"ask {safe_sender(task['peer'])} whether it arrived; the answer is in `agentcom status --json`",
            )
            self.report("a2a_maybe_answered", detail, task=tid, ids=ids)
        else:
            why = (
                f"the agent answered {NO_REPLY} (or nothing)"
                if outcome == "no_reply"
                else "the agent already replied with `agentcom reply`"
            )
            self.report(
                "a2a_no_reply", f"task {tid}: {why}; nothing sent; {len(ids)} message(s) done", task=tid, ids=ids
            )
        ack_carried(self.hub, self.store, self.s, ids)

    def _post_answer(self, task: Any, now: float) -> tuple[str, str | None, dict[str, Any]] | None:
        """Send the answer once: (outcome, its hub id, the payload), or None when it must wait
        (the hub is down) or the hub refused it for good (the task failed)."""
        tid, key = task["id"], task["answer_key"]
        where, found = "absent", None
        if key is not None:  # a POST of this answer began before: did it arrive?
            where, found = answer_at_hub(self.hub, self.s.agent_id, task, key)
            if where == "unreachable":
                self._hub_retry(tid, now, f"could not ask the hub whether the answer arrived: {found}")
                return None
        else:
            key = f"a2a-{uuid.uuid4().hex}"
            with self.store.write():
                self.tasks.update(tid, answer_key=key)
        payload = {"text": task["answer"], ANSWER_KEY: key}
        if where == "found":
            return "answered", found, payload
        if where == "unknown":  # in the sent log as unconfirmed, as any send the hub may have taken
            return "maybe_answered", unconfirmed_id(), payload
        try:
            sent, payload = post_answer(self.hub, task["peer"], payload, task["reply_to"])
            return "answered", sent, payload
        except PossiblyDelivered as exc:  # it may have arrived: the hub is asked (the key stays) before any resend
            self._hub_retry(tid, now, f"the answer's POST got no usable reply: {exc}")
        except UsageError as exc:  # the hub will never take it (too long, say): the messages go back
            self._fail(tid, now, "failed", f"the hub refused the agent's answer: {exc}")
        except AgentComError as exc:  # it never reached the hub: the next try needs no question
            with self.store.write():
                self.tasks.update(tid, answer_key=None)
            self._hub_retry(tid, now, f"could not send the agent's answer to the hub: {exc}")
        return None

    def _hub_retry(self, tid: int, now: float, detail: str) -> None:
        delay = self.rng.uniform(2.0, 10.0)
        with self.store.write():
            self.tasks.update(tid, next_at=now + delay, error=f"answer not sent yet: {detail}")
        self._failure_once("hub", now, WakeOutcome("retry", detail, status="hub"), f"{detail}; retrying")

    def _fail(self, tid: int, now: float, outcome: str, detail: str, quoted: str | None = None) -> None:
        """The task ended without an answer: its messages go back to `check`, with why. `detail`
        is in our words (it reaches `check`'s warnings); what the agent's side said (`quoted`,
        text a peer can steer) is kept only in the task's error, which renderings fence."""
        ids = self.tasks.carried(tid)
        with self.store.write():
            self.tasks.update(
                tid,
                state="failed",
                outcome=outcome,
                finished_at=now,
                error=detail,
                said=quoted[:1000] if quoted else None,
            )
            self.tasks.give_back(ids, now, f"A2A task {outcome}: {detail[:200]}" + (QUOTE_NOTE if quoted else ""))
        self.changed = True
        self._set_error(
            now,
            WakeOutcome("retry", f"task {tid}: {detail}", status=outcome),
            f"the message(s) wait for `agentcom check`; see the agent's logs for why the task {outcome}"
            + (QUOTE_NOTE if quoted else ""),
        )
        self.report(
            "a2a_failed",
            f"task {tid} {outcome}: {detail}; {len(ids)} message(s) back to `agentcom check`",
            task=tid,
            ids=ids,
            outcome=outcome,
            **_said(quoted),
        )

    # new tasks -----------------------------------------------------------------------

    def _dispatch(self, now: float) -> None:
        created = self.new_tasks.make(now)
        if self.new_tasks.held:
            self.changed = True
        for task in created:
            row = self.tasks.task(task)
            if row is None or not self._advance(row, self.clock()):
                break

    def _views(self, ids: list[str]) -> list[dict[str, Any]]:
        """The carried messages as a check shows them (still open ones only), oldest first."""
        rows = [self.store.resolve(i) for i in ids]
        return [
            history_entry(r) for r in rows if r is not None and r["state"] in ("leased", "shown", "pending", "deferred")
        ]

    # reporting ----------------------------------------------------------------------

    def _unauthorized(self, now: float, reply: A2AReply) -> None:
        outcome = WakeOutcome("unauthorized", f"A2A endpoint {self.wake.url} refused the wake token: {reply.detail}")
        self.changed = True
        self.failures.refused_token(now, outcome)

    def _failure_once(self, key: str, now: float, outcome: WakeOutcome, text: str) -> None:
        self._set_error(now, outcome)
        self.failures.once(key, "wake_failed", f"A2A: {text}")

    def _set_error(self, now: float, outcome: WakeOutcome, fix: str | None = None) -> None:
        self.failures.failed(now, outcome, fix)
        self.changed = True

    def _resolved(self, now: float) -> None:
        """A request went through: the last error is history (kept, marked cleared)."""
        if self.failures.cleared(now):
            self.changed = True
        self.failures.reported.discard("unreachable")

    def summary(self) -> dict[str, Any]:
        return self.tasks.summary()

    def close(self) -> None:
        self.client.close()


__all__ = ["A2ADispatcher"]
