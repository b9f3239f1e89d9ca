"""A state-machine property test of delivery (protocol part 4) with hypothesis.

The skill's real `run_check`/`run_ack`/defer/dismiss logic and the real SQLite store (a
temporary file) are driven against an in-memory model of the hub's semantics (global seq,
prefix ack, counter going back on restart, cap and TTL eviction) through random sequences
of posts, checks, acks, defers, dismissals, lease expiries and crashes on both sides of
every write and at every hub call. Pure logic and the store; the HTTP side is covered by the
integration tests against the real hub process.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agentcom_skill.actions.check import run_check
from agentcom_skill.actions.finish import run_ack
from agentcom_skill.config import Settings
from agentcom_skill.errors import UsageError
from agentcom_skill.message import parse_mailbox
from agentcom_skill.store import MessageStore

ME = "gcu"
PEERS = ["loash", "nathan", "skaffen"]
LEASE = 10.0
MAX_DELIVERIES = 3
REPLY_BUDGET = 2


class Crash(BaseException):
    """A simulated kill -9: nothing in the skill catches it."""


class ModelHub:
    def __init__(self):
        self.boxes: dict[str, list[dict]] = {a: [] for a in [ME, *PEERS]}
        self.seq = 0
        self.next_id = 0
        self.crash_on: str | None = None
        self.replies: list[dict] = []
        self.acked_ids: set[str] = set()  # deleted by our ack (not by eviction)

    def _maybe_crash(self, call: str) -> None:
        if self.crash_on == call:
            self.crash_on = None
            raise Crash(call)

    def post(self, sender: str, to: str | None, type_: str, payload: dict, reply_to: str | None = None) -> str:
        self.next_id += 1
        msg_id = f"{self.next_id:016x}"  # deterministic, so hypothesis can replay a run exactly
        recipients = [a for a in self.boxes if a != sender] if to in (None, "broadcast") else [to]
        for r in recipients:
            self.seq += 1
            self.boxes[r].append(
                {
                    "id": msg_id,
                    "from": sender,
                    "to": to,
                    "type": type_,
                    "payload": payload,
                    "reply_to": reply_to,
                    "timestamp": 0,
                    "seq": self.seq,
                }
            )
        return msg_id

    def restart(self) -> None:
        self.seq = max((m["seq"] for box in self.boxes.values() for m in box), default=0)

    def evict_oldest(self) -> None:
        """The hub's cap or TTL drops the oldest message, finished or not."""
        if self.boxes[ME]:
            self.boxes[ME].pop(0)

    # the HubClient surface run_check/run_ack use
    def poll(self, agent: str, since: int = 0):
        self._maybe_crash("poll")
        msgs = [m for m in self.boxes[agent] if m["seq"] > since]
        return parse_mailbox({"messages": json.loads(json.dumps(msgs))}, since)

    def send(self, to, type_, payload, reply_to=None) -> str:
        self._maybe_crash("send")
        self.replies.append({"to": to, "reply_to": reply_to, "payload": payload})
        return self.post(ME, to, type_, payload, reply_to)

    def ack(self, agent: str, seq: int) -> int:
        self._maybe_crash("ack")
        self.acked_ids |= {m["id"] for m in self.boxes[agent] if m["seq"] <= seq}
        self.boxes[agent] = [m for m in self.boxes[agent] if m["seq"] > seq]
        return seq

    def agents(self) -> list:
        return []


class CrashingStore(MessageStore):
    """The real store; `crash_on` kills the run just before or just after the next commit."""

    crash_on: str | None = None

    @contextlib.contextmanager
    def write(self):
        with super().write():
            yield self
            if self.crash_on == "before_commit":
                self.crash_on = None
                raise Crash("before_commit")
        if self.crash_on == "after_commit":
            self.crash_on = None
            raise Crash("after_commit")


SETTINGS = Settings(
    hub_url="http://model",
    agent_id=ME,
    token="t" * 64,
    state_dir=None,
    config_path=None,  # type: ignore[arg-type]
    capabilities=("code",),
    lease_seconds=LEASE,
    max_deliveries=MAX_DELIVERIES,
    auto_reply_limit=REPLY_BUDGET,
)
CRASH_POINTS = st.sampled_from([None, "poll", "before_commit", "after_commit", "send", "ack"])


class DeliveryMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.hub = ModelHub()
        self.store = CrashingStore(Path(self.tmp.name) / "messages.sqlite3")
        self.now = 1000.0
        self.attention: set[str] = set()
        self.pings: set[str] = set()
        self.returned: set[str] = set()
        self.next_allowed: dict[str, float] = {}
        self.dead_seen = False

    # traffic
    @rule(
        sender=st.sampled_from(PEERS),
        kind=st.sampled_from(["chat", "ping", "notify", "bcast_match", "bcast_other", "status"]),
    )
    def post(self, sender, kind):
        if kind == "chat":
            self.attention.add(self.hub.post(sender, ME, "chat", {"text": "hi"}))
        elif kind == "ping":
            self.pings.add(self.hub.post(sender, ME, "ping", {}))
        elif kind == "notify":
            self.hub.post(sender, ME, "chat", {"action": "notify"})
        elif kind == "bcast_match":
            self.attention.add(self.hub.post(sender, "broadcast", "request", {"needed_capabilities": ["code"]}))
        elif kind == "bcast_other":
            self.hub.post(sender, None, "request", {"needed_capabilities": "rust"})
        else:
            self.hub.post(sender, "broadcast", "status", {"status": "busy"})

    @rule(dt=st.sampled_from([1.0, 5.0, LEASE + 0.5, 61.0]))
    def advance(self, dt):
        self.now += dt

    @rule()
    def restart_hub(self):
        self.hub.restart()

    @rule()
    def hub_evicts(self):
        self.hub.evict_oldest()

    # the skill
    def _finished(self) -> set[str]:
        return {
            r["id"] for state in ("done", "dismissed", "dead") for r in self.store.messages(state=state, limit=100_000)
        } & self.attention

    @rule(limit=st.one_of(st.none(), st.integers(1, 3)), crash=CRASH_POINTS)
    def check(self, limit, crash):
        finished_before = self._finished()
        got: list[dict] = []
        self._arm(crash)
        try:
            run_check(self.hub, self.store, SETTINGS, limit=limit, now=self.now, emit=lambda r: got.append(r))
        except Crash:
            pass
        finally:
            self._disarm()
        for result in got:  # printed: delivered, even if the run died right after
            for m in result["messages"]:
                assert m["id"] in self.attention, "only attention messages are returned"
                assert m["id"] not in finished_before, "a finished message came back"
                assert self.now >= self.next_allowed.get(m["id"], 0), "returned again inside its lease or deferral"
                self.next_allowed[m["id"]] = self.now + LEASE
                self.returned.add(m["id"])
            self.dead_seen |= any("dead-lettered" in w for w in result["warnings"])

    @rule(crash=CRASH_POINTS)
    def peek(self, crash):
        before = self._dump()
        replies = len(self.hub.replies)
        self.hub.crash_on = crash if crash in ("poll", "send", "ack") else None
        with contextlib.suppress(Crash):
            run_check(self.hub, self.store, SETTINGS, limit=None, peek=True, now=self.now)
        self.hub.crash_on = None
        assert self._dump() == before and len(self.hub.replies) == replies

    @precondition(lambda self: self.returned)
    @rule(data=st.data(), how=st.sampled_from(["ids", "bare", "through"]), crash=CRASH_POINTS)
    def ack(self, data, how, crash):
        target = data.draw(st.sampled_from(sorted(self.returned)))
        self._arm(crash)
        try:
            if how == "ids":
                refs, through = [target], None
            elif how == "through":
                refs, through = [], self.store.resolve(target)["seq"]
            else:
                refs, through = [], None
            result = run_ack(self.hub, self.store, SETTINGS, refs, through, self.now)
        except Crash:
            return
        finally:
            self._disarm()
        assert {a["id"] for a in result["acked"]} <= self.returned, "only returned messages can be acked"

    @rule(data=st.data())
    def ack_never_shown(self, data):
        """Acking a message never shown is an error that changes nothing."""
        candidates = sorted(self.attention - self.returned)
        if not candidates:
            return
        target = data.draw(st.sampled_from(candidates))
        before = self._dump()
        with pytest.raises(UsageError):
            run_ack(self.hub, self.store, SETTINGS, [target], None, self.now)
        assert self._dump() == before

    @precondition(lambda self: self.returned)
    @rule(
        data=st.data(),
        seconds=st.sampled_from([3.0, 30.0]),
        crash=st.sampled_from([None, "before_commit", "after_commit"]),
    )
    def defer(self, data, seconds, crash):
        target = data.draw(st.sampled_from(sorted(self.returned)))
        row = self.store.resolve(target)
        if row["state"] not in ("leased", "shown", "deferred") or not row["ever_shown"]:
            return
        self.store.crash_on = crash
        try:
            with self.store.write():
                self.store.defer([target], self.now + seconds, self.now)
        except Crash:
            if crash == "before_commit":
                return
        finally:
            self.store.crash_on = None
        self.next_allowed[target] = self.now + seconds

    @precondition(lambda self: self.returned)
    @rule(data=st.data())
    def dismiss(self, data):
        target = data.draw(st.sampled_from(sorted(self.returned)))
        with self.store.write():
            self.store.finish([target], "dismissed", self.now)

    def _arm(self, crash):
        if crash in ("before_commit", "after_commit"):
            self.store.crash_on = crash
        else:
            self.hub.crash_on = crash

    def _disarm(self):
        self.store.crash_on = None
        self.hub.crash_on = None

    def _dump(self) -> list:
        return [tuple(r) for r in self.store._read("SELECT * FROM messages ORDER BY id")] + [
            tuple(r) for r in self.store._read("SELECT * FROM meta ORDER BY key")
        ]

    # invariants
    @invariant()
    def the_hub_is_acked_only_for_finished_messages(self):
        assert (self.hub.acked_ids & self.attention) <= self._finished()

    @invariant()
    def no_ping_is_answered_twice(self):
        counts = Counter(r["reply_to"] for r in self.hub.replies)
        assert all(n == 1 for n in counts.values())
        assert set(counts) <= self.pings

    @invariant()
    def every_stored_row_is_readable(self):
        for r in self.store._read("SELECT body FROM messages WHERE body IS NOT NULL"):
            json.loads(r[0])

    def teardown(self):
        try:
            # Drain: whenever leases and deferrals have run out, a normal check returns
            # everything still open, until it is finished (acked here) or dead-lettered.
            for _ in range(MAX_DELIVERIES + 2):
                self.now += 60
                finished = self._finished()
                got = run_check(self.hub, self.store, SETTINGS, limit=None, now=self.now)
                returned = {m["id"] for m in got["messages"]}
                assert not returned & finished
                self.returned |= returned
            # A message the hub evicted before any check stored it is beyond reach (the cap
            # hazard warns of that); every other one must end finished or dead-lettered.
            stored = {r["id"] for r in self.store._read("SELECT id FROM messages")}
            reachable = self.attention & (stored | {m["id"] for m in self.hub.boxes[ME]})
            open_left = reachable - self._finished()
            assert not open_left, "an attention message was neither finished nor dead-lettered"
            assert reachable - {r["id"] for r in self.store.messages(state="dead", limit=100_000)} <= self.returned, (
                "never returned"
            )
        finally:
            self.store.close()
            self.tmp.cleanup()


TestDeliveryMachine = DeliveryMachine.TestCase
TestDeliveryMachine.settings = hyp_settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_the_machine_reaches_dead_letters_budget_and_eviction():
    """The property test's limits are within its reach: dead letters, the reply budget,
    and evicted attention messages all occur in a short fixed run."""
    m = DeliveryMachine()
    try:
        for sender in PEERS[:1] * 3:
            m.post(sender, "ping")
        m.post("loash", "chat")
        m.post("loash", "chat")
        m.hub_evicts()  # the first ping
        m.check(None, None)
        assert len(m.hub.replies) == 1, "three pings coalesce to one pong"
        for _ in range(3):
            m.post("loash", "ping")
            m.check(None, None)
        assert len(m.hub.replies) == REPLY_BUDGET, "the budget stops further pongs within the minute"
        m.hub.boxes[ME].clear()  # cap/TTL evicted everything: the chats live on locally
        for _ in range(MAX_DELIVERIES):
            m.advance(LEASE + 0.5)
            m.check(None, None)
        m.advance(LEASE + 0.5)
        m.check(None, None)
        assert m.dead_seen, "dead-lettered after max_deliveries"
        assert len(m.returned) == 2
    finally:
        m.store.close()
        m.tmp.cleanup()
