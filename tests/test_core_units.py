"""Fast unit tests of the pure core: configuration, state file, delivery planning."""

from __future__ import annotations

import json
import stat

import pytest

from agentcom_skill.config import load_settings
from agentcom_skill.delivery import hub_prefix, mark_acked, plan_check
from agentcom_skill.errors import ConfigError, HubProtocolError
from agentcom_skill.message import parse_mailbox
from agentcom_skill.state import AgentState, StateStore

TOKEN = "a1" * 32


def settings(tmp_path, **over):
    base = {"hub_url": "http://hub:4000", "agent_id": "gcu", "token": TOKEN, "state_dir": str(tmp_path), "config": str(tmp_path / "none.toml")}
    return load_settings({**base, **over}, env={})


# configuration -------------------------------------------------------------------------


def test_precedence_cli_over_env_over_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('hub_url = "http://file:1"\nagent_id = "from-file"\ntoken = "' + "f" * 64 + '"\nlease_seconds = 60\ncapabilities = ["Code"]\n')
    env = {"AGENTCOM_CONFIG": str(cfg), "AGENTCOM_AGENT_ID": "from-env", "AGENTCOM_STATE_DIR": str(tmp_path)}
    s = load_settings({"hub_url": "http://cli:2/"}, env=env)
    assert (s.hub_url, s.agent_id, s.token, s.lease_seconds, s.capabilities) == ("http://cli:2", "from-env", "f" * 64, 60.0, ("Code",))
    assert s.sources["hub_url"] == "the command line"
    assert s.sources["agent_id"] == "environment variable AGENTCOM_AGENT_ID"
    assert s.sources["token"].startswith("config file")


def test_the_token_is_never_in_repr_or_public_view(tmp_path):
    s = settings(tmp_path)
    assert TOKEN not in repr(s)
    assert TOKEN not in json.dumps(s.public())
    assert s.public()["token"] == "****" + TOKEN[-4:]


@pytest.mark.parametrize(
    "over,needle",
    [
        ({"hub_url": "ftp://x"}, "hub_url"),
        ({"agent_id": "bad id with spaces"}, "agent_id"),
        ({"token": "has space inside"}, "token"),
        ({"lease_seconds": -1}, "lease_seconds"),
        ({"max_deliveries": "many"}, "max_deliveries"),
    ],
)
def test_invalid_settings_name_themselves(tmp_path, over, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        settings(tmp_path, **over)
    assert TOKEN not in str(info.value)


def test_state_folder_is_per_hub_and_agent(tmp_path):
    a = settings(tmp_path).agent_state_dir()
    b = settings(tmp_path, hub_url="http://other:4000").agent_state_dir()
    c = settings(tmp_path, agent_id="other").agent_state_dir()
    assert len({a, b, c}) == 3 and all(p.parent == tmp_path for p in (a, b, c))


# state file ----------------------------------------------------------------------------


def test_state_round_trip_private_and_atomic(tmp_path):
    store = StateStore(tmp_path / "s")
    state = AgentState(cursor=7)
    state.done["x"] = {"seq": 3, "at": 1.0}
    store.save(state)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    loaded, warnings = store.load()
    assert loaded.cursor == 7 and loaded.done == state.done and warnings == []
    assert [p.name for p in store.directory.iterdir()] == ["state.json"]


def test_corrupt_state_is_moved_aside_unless_peeking(tmp_path):
    store = StateStore(tmp_path / "s")
    store.directory.mkdir()
    store.path.write_text('{"version": 1, "cursor": "high"}')
    state, warnings = store.load(move_corrupt=False)
    assert state.recovered and store.path.exists() and "unusable" in warnings[0]
    state, warnings = store.load()
    assert state.recovered and not store.path.exists()
    assert str(store.path) in warnings[0] and "state.json.corrupt-" in warnings[0]


# delivery planning ---------------------------------------------------------------------


def batch(*msgs):
    raw = []
    for seq, sender, type_, payload in msgs:
        raw.append({"id": f"id{seq}-{sender}", "from": sender, "to": "gcu", "type": type_, "payload": payload, "reply_to": None, "timestamp": 1, "seq": seq})
    return parse_mailbox({"messages": raw}, 0)


def test_auto_reply_budget_holds_across_runs(tmp_path):
    s = settings(tmp_path, auto_reply_limit=2)
    state = AgentState()
    sent = []
    for run in range(4):  # one ping per run from the same sender, within one minute
        plan = plan_check(state, batch((run + 1, "nathan", "ping", {})), s, now=1000.0 + run)
        sent += plan.replies
    assert len(sent) == 2
    assert [e["disposition"] for e in state.log] == ["auto_reply", "auto_reply", "store", "store"]
    assert "auto-reply limit" in state.log[-1]["reason"]
    plan = plan_check(state, batch((9, "nathan", "ping", {})), s, now=1100.0)  # a minute later
    assert len(plan.replies) == 1


def test_regression_is_detected_and_known_ids_are_not_reprocessed(tmp_path):
    s = settings(tmp_path)
    state = AgentState()
    plan_check(state, batch((50, "loash", "chat", {"text": "a"})), s, now=1.0)
    assert state.cursor == 50
    plan = plan_check(state, batch((50, "loash", "chat", {"text": "a"}), (2, "loash", "chat", {"text": "b"})), s, now=2.0)
    assert [m["id"] for m in plan.messages] == ["id2-loash"]
    assert any("went backwards" in w for w in plan.warnings)


def test_hub_prefix_stops_at_the_first_unfinished(tmp_path):
    s = settings(tmp_path)
    state = AgentState()
    b = batch((1, "a", "status", {"status": "x"}), (2, "a", "chat", {"text": "hi"}), (3, "a", "ack", {}))
    plan = plan_check(state, b, s, now=1.0)
    assert hub_prefix(state, b) == 1
    assert mark_acked(state, None, 2.0) == [], "nothing was confirmed as shown yet"
    state.attention[plan.messages[0]["id"]]["shown"] = True
    assert mark_acked(state, None, 2.0) == [{"id": "id2-a", "seq": 2}]
    assert hub_prefix(state, b) == 3


def test_malformed_hub_bodies_are_protocol_errors():
    for body in ([], {"messages": "x"}, {"messages": [{"id": "a", "from": "b", "seq": True, "payload": {}}]}, {"messages": [{"id": "a", "from": "b", "seq": 1, "payload": []}]}):
        with pytest.raises(HubProtocolError):
            parse_mailbox(body, 0)
