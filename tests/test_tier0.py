"""Unit tests of the Tier 0 rule table (protocol part 3), one row at a time."""

from __future__ import annotations

import pytest

from agentcom_skill.message import Message, parse_message
from agentcom_skill.tier0 import (
    ATTENTION,
    AUTO_REPLY,
    DROP,
    PONG,
    STATUS_REPLY,
    STORE,
    Tier0Config,
    attention_order,
    classify,
    coalesce,
)

CONFIG = Tier0Config.build("gcu", ["Code", " elixir "], ["spammy-*", "Troll"])
_seq = iter(range(1, 10_000))


def msg(sender="loash", to="gcu", type_="chat", payload=None, **extra) -> Message:
    raw = {
        "id": f"id{next(_seq)}",
        "from": sender,
        "to": to,
        "type": type_,
        "payload": payload or {},
        "reply_to": None,
        "timestamp": 1,
        "seq": next(_seq),
    }
    raw.update(extra)
    return parse_message(raw)


def decide(**kw):
    return classify(msg(**kw), CONFIG)


def test_rule1_duplicate_is_dropped_first():
    d = classify(msg(type_="ping"), CONFIG, duplicate=True)
    assert (d.disposition, d.rule) == (DROP, 1)


def test_rule2_own_echo():
    d = decide(sender="gcu", type_="ping")
    assert (d.disposition, d.rule, d.reason) == (DROP, 2, "own echo")


@pytest.mark.parametrize("sender", ["spammy-bot", "SPAMMY-2", "troll"])
def test_rule3_ignored_sender_globs_fold_case(sender):
    d = decide(sender=sender, type_="ping")
    assert (d.disposition, d.rule) == (DROP, 3)


def test_rule3_does_not_match_others():
    assert decide(sender="spam").disposition == ATTENTION


@pytest.mark.parametrize(
    "type_,payload", [("ping", {}), (" PING ", {}), ("request", {"action": "ping"}), ("chat", {"action": " Ping"})]
)
def test_rule4_ping_gets_a_pong(type_, payload):
    d = decide(type_=type_, payload=payload)
    assert (d.disposition, d.rule, d.reply) == (AUTO_REPLY, 4, PONG)


@pytest.mark.parametrize(
    "type_,payload",
    [("response", {"action": "ping"}), ("ping", {"action": "pong"}), ("Response", {"action": "status"})],
)
def test_loop_guard_never_answers_responses_or_auto_replies(type_, payload):
    assert decide(type_=type_, payload=payload).disposition != AUTO_REPLY


def test_rule5_status_request():
    d = decide(type_="request", payload={"action": "STATUS", "respond_with": "structured"})
    assert (d.disposition, d.rule, d.reply) == (AUTO_REPLY, 5, STATUS_REPLY)


def test_rule6_presence_update_is_stored():
    d = decide(type_="status", to="broadcast", payload={"status": "busy"})
    assert (d.disposition, d.rule) == (STORE, 6)


@pytest.mark.parametrize(
    "type_,payload,reason",
    [
        ("chat", {"action": "notify", "text": "fyi"}, "notify"),
        ("notify", {}, "notify"),
        ("progress", {"percent": 5}, "progress"),
        ("ack", {}, "ack"),
        ("response", {"action": "pong"}, "pong"),
        ("response", {"action": "status_reply"}, "status_reply"),
        ("chat", {"respond_with": " None ", "text": "x"}, "respond_with none"),
    ],
)
def test_rule7_notifications_are_stored(type_, payload, reason):
    d = decide(type_=type_, payload=payload)
    assert (d.disposition, d.rule, d.reason) == (STORE, 7, reason)


@pytest.mark.parametrize("to", [None, "broadcast", "BROADCAST"])
def test_rule8_broadcast_with_capabilities_we_lack_is_dropped(to):
    d = decide(to=to, type_="request", payload={"needed_capabilities": ["rust", "go"]})
    assert (d.disposition, d.rule) == (DROP, 8)


def test_rule8_needed_capabilities_as_a_string_and_folded():
    assert decide(to=None, payload={"needed_capabilities": "rust"}).disposition == DROP
    d = decide(to=None, payload={"needed_capabilities": " ELIXIR "})
    assert d.disposition == ATTENTION and "elixir" in d.reason


def test_rule8_only_applies_to_broadcasts():
    d = decide(to="gcu", type_="delegate", payload={"needed_capabilities": ["rust"]})
    assert (d.disposition, d.reason) == (ATTENTION, "direct delegate")


def test_rule9_everything_else_needs_attention():
    assert decide().reason == "direct chat"
    assert decide(to=None, payload={"text": "anyone?"}).reason == "broadcast"
    assert decide(to=None, payload={"needed_capabilities": []}).reason == "broadcast"
    assert decide(type_="response", payload={"text": "answer"}).disposition == ATTENTION


def test_first_matching_rule_wins():
    # an ignored sender's ping is dropped, not answered; a status update that says notify is rule 6
    assert decide(sender="spammy-x", type_="ping").rule == 3
    assert decide(type_="status", payload={"action": "notify"}).rule == 6


def test_coalesce_keeps_the_newest_per_sender_and_kind():
    pings = [msg(sender=s, type_="ping") for s in ("a", "b", "a", "a")]
    status = [msg(sender="a", payload={"action": "status"})]
    batch = [(m, classify(m, CONFIG)) for m in pings[:2] + status + pings[2:]]
    chosen = coalesce(batch)
    picked = {(m.sender, d.reply): m.id for m, d in chosen}
    assert picked == {("a", PONG): pings[3].id, ("b", PONG): pings[1].id, ("a", STATUS_REPLY): status[0].id}


def test_attention_order():
    items = [
        ("normal", True, 1),
        ("normal", False, 2),
        ("high", True, 3),
        ("urgent", False, 4),
        ("low", False, 5),
        ("high", False, 6),
    ]
    ordered = sorted(items, key=lambda i: attention_order(*i))
    assert [i[2] for i in ordered] == [4, 6, 3, 2, 5, 1]


def test_message_priority_is_folded_and_defaults_to_normal():
    assert msg(payload={"priority": " URGENT"}).priority == "urgent"
    assert msg(payload={"priority": "whatever"}).priority == "normal"
    assert msg(payload={"priority": 3}).priority == "normal"
