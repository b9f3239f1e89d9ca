"""The pure parts of channels and the room (issue 26): addresses, mentions, Tier 0's row 10,
room messages and their keys, and how a read of the room continues the last one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcom_skill.errors import UsageError
from agentcom_skill.groups import (
    channel_frame_message,
    parse_address,
    plan_room_read,
    room_frame_message,
    room_message,
    room_since,
)
from agentcom_skill.message import parse_message
from agentcom_skill.tier0 import ATTENTION, DROP, STORE, Tier0Config, classify, mentions


def test_addresses():
    assert parse_address("#Re-Search!") == ("channel", "#re-search")
    assert parse_address("@room") == ("room", "@room") and parse_address("@ROOM").kind == "room"
    assert parse_address("Broadcast") == ("broadcast", "broadcast")
    assert parse_address("bob") == ("agent", "bob") and parse_address("@bob") == ("agent", "@bob")
    for bad in ("", "  ", "#", "#!!", None):
        with pytest.raises(UsageError):
            parse_address(bad)


def test_mentions_are_words():
    assert mentions("hey @bob, look", "bob") and mentions("@BOB.", "bob") and mentions("(@bob)", "bob")
    assert not mentions("hey @bobby", "bob") and not mentions("mail bob@bob", "bob")
    assert not mentions("@bob-2 and @bob.smith", "bob") and mentions("@bob.smith", "bob.smith")
    assert not mentions("bob without the at", "bob") and not mentions(None, "bob")


def _channel(text: str, reply_to: str | None = None, sender: str = "bob", type_: str = "chat"):
    return parse_message(
        {
            "seq": 3,
            "id": "a" * 16,
            "from": sender,
            "to": None,
            "type": type_,
            "payload": {"text": text, "channel": "research"},
            "reply_to": reply_to,
        }
    )


ROOM_RAW = {"seq": 7, "from": "Dana", "text": "hello @alice", "type": "chat", "timestamp": 1_700_000_000_000}


def test_row_10_in_a_channel():
    config = Tier0Config.build("alice", groups=[("#research", "mentions")])
    assert classify(_channel("chatter"), config).disposition == STORE
    assert classify(_channel("@alice see this"), config) == (ATTENTION, 10, "names @alice in #research", None)
    assert classify(_channel("thanks", reply_to="f" * 16), config, ours={"f" * 16}).disposition == ATTENTION
    assert classify(_channel("ping", type_="ping"), config).disposition == "auto_reply"  # rows 4-7 still apply
    assert classify(_channel("x", sender="alice"), config).rule == 2
    left = Tier0Config.build("alice", groups=[("#other", "all")])
    assert classify(_channel("@alice ping", type_="ping"), left)[:2] == (DROP, 10)  # left: nothing, not even a pong
    loud = Tier0Config.build("alice", groups=[("#research", "all")])
    quiet = Tier0Config.build("alice", groups=[("#research", "none")])
    assert classify(_channel("x"), loud).disposition == ATTENTION
    assert classify(_channel("@alice x"), quiet).disposition == STORE
    # a direct message is untouched by the row: no channel
    direct = _channel("x")._replace(to="alice")
    assert direct.channel is None and classify(direct, config).rule == 9


def test_row_10_in_the_room_where_the_sender_is_only_claimed():
    msg = room_message(ROOM_RAW)
    config = Tier0Config.build("alice", groups=[("@room", "mentions")])
    assert msg.channel == "@room" and msg.seq is None and msg.sender == "Dana"
    assert classify(msg, config).disposition == ATTENTION
    forged = room_message({**ROOM_RAW, "from": "alice"})
    assert classify(forged, config).disposition == ATTENTION, "our own name claimed is not our echo"
    assert classify(forged, config, ours={forged.id})[:2] == (DROP, 2), "our own post is known by its key"
    allow = Tier0Config.build("alice", allow_from=["dana"], groups=[("@room", "all")])
    assert classify(msg, allow)[:2] == (STORE, 3), "a claimed name never matches allow_from"
    ping = room_message({**ROOM_RAW, "type": "ping"})
    assert classify(ping, config).disposition != "auto_reply", "nothing is answered for a claimed sender"
    assert classify(msg, Tier0Config.build("alice"))[:2] == (DROP, 10)


def test_room_keys_are_stable_and_polled_equals_pushed():
    polled = room_message(ROOM_RAW)
    pushed = room_frame_message({**{k: v for k, v in ROOM_RAW.items() if k != "type"}, "message_type": "chat"})
    assert polled == pushed and len(polled.id) == 16
    restarted = room_message({**ROOM_RAW, "timestamp": ROOM_RAW["timestamp"] + 5})
    assert restarted.id != polled.id, "the same seq after a hub restart is another message"
    odd = room_message({**ROOM_RAW, "type": 5})
    assert odd.type == "chat" and odd.payload["room_type"] == 5


def test_a_pushed_channel_frame_is_its_mailbox_copy():
    frame = {
        "type": "channel_message",
        "channel": "research",
        "id": "b" * 16,
        "from": "bob",
        "message_type": "chat",
        "payload": {"text": "hi"},
        "reply_to": None,
        "timestamp": 5,
    }
    mailbox = parse_message(
        {
            "seq": 9,
            "id": "b" * 16,
            "from": "bob",
            "to": None,
            "type": "chat",
            "payload": {"text": "hi", "channel": "research"},
            "reply_to": None,
            "timestamp": 5,
        }
    )
    assert channel_frame_message(frame) == mailbox._replace(seq=None)


def _room(seqs, stamp=0):
    return [room_message({**ROOM_RAW, "seq": s, "timestamp": stamp + s}) for s in seqs]


def test_room_reads_continue_warn_on_gaps_and_restart_after_a_hub_restart():
    first = _room(range(1, 6))
    read = plan_room_read(first, 5, 0, None)
    assert [m.payload["room_seq"] for m in read.messages] == [1, 2, 3, 4, 5] and read.cursor == 5 and not read.warnings
    assert room_since(read.cursor) == 4
    more = _room(range(4, 9))
    step = plan_room_read(more[1:], 8, read.cursor, read.cursor_key)
    assert [m.payload["room_seq"] for m in step.messages] == [6, 7, 8] and step.cursor == 8
    nothing = plan_room_read(_room([8])[:1], 8, 8, step.cursor_key)
    assert nothing.messages == [] and nothing.cursor == 8
    # the ring overflowed past our cursor: what is there is taken, with a warning
    overflow = plan_room_read(_room(range(600, 605)), 604, 8, step.cursor_key)
    assert len(overflow.messages) == 5 and overflow.warnings
    # the hub restarted: its seq went back below ours, or the message at our seq is another one
    assert plan_room_read([], 2, 8, step.cursor_key).again
    assert plan_room_read(_room([8, 9], stamp=10_000), 9, 8, step.cursor_key).again
    again = plan_room_read(_room([1, 2], stamp=10_000), 2, 8, step.cursor_key, from_start=True)
    assert len(again.messages) == 2 and again.cursor == 2 and "went back" in again.warnings[0]
    emptied = plan_room_read([], 0, 8, step.cursor_key, from_start=True)
    assert emptied.cursor == 0


@given(st.lists(st.integers(min_value=1, max_value=40), unique=True, min_size=1))
def test_no_room_message_is_taken_twice_or_skipped_while_the_seq_counts_on(seqs):
    """Reading in steps from any cursor takes every message after it exactly once."""
    seqs = sorted(seqs)
    everything = _room(seqs)
    cursor, key, taken = 0, None, []
    for upto in range(1, len(seqs) + 1):
        visible = [m for m in everything[:upto] if m.payload["room_seq"] > room_since(cursor)]
        read = plan_room_read(visible, seqs[upto - 1], cursor, key)
        assert not read.again
        taken += [m.payload["room_seq"] for m in read.messages]
        cursor, key = read.cursor, read.cursor_key
    assert taken == seqs
