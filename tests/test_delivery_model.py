"""A state-machine property test of delivery (protocol part 4) with hypothesis.

The skill's real `run_check`/`run_ack` are driven against an in-memory model of the hub's
semantics (global seq, prefix ack, counter going back on restart) and an in-memory state
store, through random sequences of posts, checks, acks, lease expiries, hub restarts and
crashes at every step of a run. This is pure logic: the HTTP side is covered by the
integration tests against the real hub process.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter

from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agentcom_skill.config import Settings
from agentcom_skill.message import parse_mailbox
from agentcom_skill.skill import run_ack, run_check
from agentcom_skill.state import AgentState

ME = "gcu"
PEERS = ["loash", "nathan", "skaffen"]
LEASE = 10.0


class Crash(BaseException):
    """A simulated kill -9: nothing in the skill catches it."""


class ModelHub:
    def __init__(self):
        self.boxes: dict[str, list[dict]] = {a: [] for a in [ME, *PEERS]}
        self.seq = 0
        self.next_id = 0
        self.crash_on: str | None = None
        self.replies: list[dict] = []

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
            self.boxes[r].append({"id": msg_id, "from": sender, "to": to, "type": type_, "payload": payload, "reply_to": reply_to, "timestamp": 0, "seq": self.seq})
        return msg_id

    def restart(self) -> None:
        self.seq = max((m["seq"] for box in self.boxes.values() for m in box), default=0)

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
        self.boxes[agent] = [m for m in self.boxes[agent] if m["seq"] > seq]
        return seq

    def agents(self) -> list:
        return []


class MemoryStore:
    def __init__(self):
        self.saved: str | None = None
        self.crash_on: str | None = None

    @contextlib.contextmanager
    def locked(self):
        yield

    def load(self, move_corrupt: bool = True):
        if self.saved is None:
            return AgentState(), []
        return AgentState.from_json(json.loads(self.saved)), []

    def save(self, state: AgentState) -> None:
        if self.crash_on == "before_save":
            self.crash_on = None
            raise Crash("before_save")
        self.saved = json.dumps(state.to_json())
        if self.crash_on == "after_save":
            self.crash_on = None
            raise Crash("after_save")


SETTINGS = Settings(
    hub_url="http://model", agent_id=ME, token="t" * 64, state_dir=None, config_path=None,  # type: ignore[arg-type]
    capabilities=("code",), lease_seconds=LEASE, max_deliveries=1000, auto_reply_limit=1000,
)
CRASH_POINTS = st.sampled_from([None, "poll", "before_save", "after_save", "send", "ack"])


class DeliveryMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.hub = ModelHub()
        self.store = MemoryStore()
        self.now = 1000.0
        self.attention: set[str] = set()
        self.pings: set[str] = set()
        self.returned: set[str] = set()
        self.last_return: dict[str, float] = {}
        self.seq_of: dict[str, int] = {}
        self.acked: set[str] = set()

    # traffic
    @rule(sender=st.sampled_from(PEERS), kind=st.sampled_from(["chat", "ping", "notify", "bcast_match", "bcast_other", "status"]))
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

    @rule(dt=st.sampled_from([1.0, 5.0, LEASE + 0.5]))
    def advance(self, dt):
        self.now += dt

    @rule()
    def restart_hub(self):
        self.hub.restart()

    # the skill
    @rule(limit=st.one_of(st.none(), st.integers(1, 3)), crash=CRASH_POINTS)
    def check(self, limit, crash):
        self._arm(crash)
        try:
            result = run_check(self.hub, self.store, SETTINGS, limit, False, self.now)
        except Crash:
            return
        finally:
            self._disarm()
        for m in result["messages"]:
            assert m["id"] in self.attention, "only attention messages are returned"
            last = self.last_return.get(m["id"])
            assert last is None or last + LEASE <= self.now, "returned again inside its lease"
            assert m["redelivered"] == (m["deliveries"] > 1)
            self.last_return[m["id"]] = self.now
            self.returned.add(m["id"])
            self.seq_of[m["id"]] = m["seq"]

    @rule(crash=CRASH_POINTS)
    def peek(self, crash):
        before = self.store.saved
        replies = len(self.hub.replies)
        with contextlib.suppress(Crash):
            run_check(self.hub, self.store, SETTINGS, None, True, self.now)
        self.hub.crash_on = None
        assert self.store.saved == before and len(self.hub.replies) == replies

    @precondition(lambda self: self.returned - self.acked)
    @rule(data=st.data(), crash=CRASH_POINTS)
    def ack(self, data, crash):
        open_ids = sorted(self.returned - self.acked)
        target = data.draw(st.one_of(st.none(), st.sampled_from(open_ids)))
        self._arm(crash)
        try:
            result = run_ack(self.hub, self.store, SETTINGS, None if target is None else self.seq_of[target], self.now)
        except Crash:
            return
        finally:
            self._disarm()
        self.acked |= {a["id"] for a in result["acked"]}

    def _arm(self, crash):
        if crash in ("before_save", "after_save"):
            self.store.crash_on = crash
        else:
            self.hub.crash_on = crash

    def _disarm(self):
        self.store.crash_on = None
        self.hub.crash_on = None

    # invariants
    @invariant()
    def nothing_unfinished_is_deleted_at_the_hub(self):
        at_hub = {m["id"] for m in self.hub.boxes[ME]}
        missing = self.attention - self.acked - at_hub
        # an ack whose run crashed after the state save is still an ack by the agent
        saved = AgentState.from_json(json.loads(self.store.saved)) if self.store.saved else AgentState()
        assert missing <= set(saved.done), "the hub deleted a message nobody finished"
        assert all(i in self.returned for i in missing), "only returned messages can be acked"

    @invariant()
    def no_ping_is_answered_twice(self):
        counts = Counter(r["reply_to"] for r in self.hub.replies)
        assert all(n == 1 for n in counts.values())
        assert set(counts) <= self.pings

    def teardown(self):
        # Drain: once every lease has run out, a normal check returns everything still open.
        self.now += LEASE + 1
        result = run_check(self.hub, self.store, SETTINGS, None, False, self.now)
        self.returned |= {m["id"] for m in result["messages"]}
        assert self.attention <= self.returned, "an attention message was never returned"


TestDeliveryMachine = DeliveryMachine.TestCase
TestDeliveryMachine.settings = hyp_settings(max_examples=300, stateful_step_count=40, deadline=None)
