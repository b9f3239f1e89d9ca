"""The hook/command wake driver with a scripted waker and an injected clock: a wake is a
delivery (leased, shown when handed over, restored exactly when it failed); a refused token
is said once ("WAKE REFUSED") and pauses the wakes, which SIGHUP (`retry_now`) ends; the one
Retry-After clamp."""

from __future__ import annotations

import pytest

from agentcom_skill.config import WakeSettings, load_settings
from agentcom_skill.delivery import plan_check
from agentcom_skill.hookwake import HookWakeDriver
from agentcom_skill.message import parse_mailbox
from agentcom_skill.store import MessageStore
from agentcom_skill.transport import retry_after, retry_after_seconds
from agentcom_skill.wake import UNAUTHORIZED_PAUSE, WakeOutcome

NOW = 1_800_000_000.0
IDS = [f"{n:016x}" for n in (1, 2)]


class ScriptedWaker:
    def __init__(self, *outcomes: WakeOutcome):
        self.outcomes = list(outcomes)
        self.sent: list[list[str]] = []

    def send(self, prompt: str, ids, deliveries) -> WakeOutcome:
        self.sent.append(list(ids))
        return self.outcomes.pop(0)


class Rig:
    def __init__(self, *outcomes: WakeOutcome, mode: str = "agent"):
        s = load_settings(
            {
                "hub_url": "http://hub:4000",
                "agent_id": "gcu",
                "token": "a1" * 32,
                "state_dir": "/nonexistent",
                "config": "/nonexistent/none.toml",
            },
            env={},
        )
        self.s = s.replace(wake=WakeSettings(mode=mode, url="http://gateway:1", window=0, min_interval=0))
        self.store = MessageStore.memory()
        raw = [
            {"id": i, "from": "bob", "to": "gcu", "type": "chat", "payload": {"text": f"t{i}"}, "seq": n + 1}
            for n, i in enumerate(IDS)
        ]
        batch = parse_mailbox({"messages": raw, "last_seq": 2}, 0)
        with self.store.write():
            self.store.apply_check(plan_check(batch, self.store.view(IDS, NOW, 0), self.s, NOW, 0), NOW)
        self.now = NOW
        self.events: list[tuple[str, str, dict]] = []
        self.waker = ScriptedWaker(*outcomes)
        self.driver = HookWakeDriver(
            self.s,
            self.store,
            self.report,
            lambda: self.now,
            waker=self.waker,  # type: ignore[arg-type]
        )

    def report(self, kind: str, text: str, **fields) -> None:
        self.events.append((kind, text, fields))

    def states(self) -> list[tuple[str, int]]:
        rows = [self.store.resolve(i) for i in IDS]
        return [(r["state"], r["deliveries"]) for r in rows]


def test_a_wake_that_goes_through_shows_its_messages_and_counts():
    rig = Rig(WakeOutcome("ok"))
    rig.driver.step()
    assert rig.waker.sent == [IDS]
    assert rig.states() == [("shown", 1), ("shown", 1)], "shown: the agent's ack works on them"
    assert [e[0] for e in rig.events] == ["woke"] and rig.events[0][2]["ids"] == IDS
    assert rig.driver.changed and rig.driver.status() == {"wakes_sent": 1, "last_wake_error": None}


def test_a_refused_token_restores_the_messages_says_so_once_and_pauses_until_sighup():
    refused = WakeOutcome("unauthorized", "gateway refused the wake token (401)")
    rig = Rig(refused, refused, refused, WakeOutcome("ok"))
    before = rig.states()
    rig.driver.step()
    assert rig.states() == before, "not delivered: as they were (check and the next wake return them)"
    assert [(k, t.startswith("WAKE REFUSED: gateway refused")) for k, t, _ in rig.events] == [
        ("wake_unauthorized", True)
    ]
    assert rig.driver.last_error is not None and rig.driver.last_error["kind"] == "unauthorized"
    rig.now += UNAUTHORIZED_PAUSE - 1
    rig.driver.step()
    assert len(rig.waker.sent) == 1, "paused: no wake for the pause"
    rig.now += 2
    rig.driver.step()
    assert len(rig.waker.sent) == 2 and [e[0] for e in rig.events] == ["wake_unauthorized"], "said once"
    rig.driver.retry_now()  # SIGHUP, [wake] unchanged: fixed at the gateway
    rig.driver.step()
    assert len(rig.waker.sent) == 3 and [e[0] for e in rig.events].count("wake_unauthorized") == 2
    rig.driver.retry_now()
    rig.driver.step()
    assert rig.states() == [("shown", 1), ("shown", 1)]
    assert rig.driver.last_error is not None and "cleared_at" in rig.driver.last_error


def test_a_failed_notice_wake_backs_off_by_retry_after_and_leaves_nothing_shown():
    rig = Rig(WakeOutcome("retry", "gateway answered 503", retry_after=7.0), WakeOutcome("ok"), mode="wake")
    rig.driver.step()
    assert rig.states() == [("pending", 0), ("pending", 0)]
    assert rig.events[-1][0] == "wake_failed" and "retrying in 7.0 s" in rig.events[-1][1]
    rig.now += 6
    rig.driver.step()
    assert len(rig.waker.sent) == 1
    rig.now += 1
    rig.driver.step()
    assert len(rig.waker.sent) == 2 and rig.states() == [("shown", 1), ("shown", 1)]


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), ("0", 1.0), ("-3", 1.0), ("99999", 3600.0), ("inf", 3600.0), ("nan", None), ("Wed, 21 Oct", None)],
)
def test_retry_after_is_clamped_once_for_every_peer(header, seconds):
    assert retry_after_seconds(header) == seconds, "the wakes' and the A2A client's reading"
    assert retry_after(header, floor=1.0) == (1.0 if seconds is None else seconds), "the hub client's"
