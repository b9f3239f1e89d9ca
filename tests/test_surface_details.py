"""Issue 32, item 5: the smaller things seen on the real hub, each through the real processes
(our hub, the CLI) where they cross one, and as units where they are pure logic."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, run_json
from hubprocess import agent_env, eventually
from test_hub_contract import ws_call, ws_connect
from test_surface_cli import start_watch, stop

from agentcom_skill.actions.check import run_check, seq_restarted
from agentcom_skill.actions.finish import run_ack
from agentcom_skill.actions.hazards import note_listed_statuses
from agentcom_skill.actions.send import ping
from agentcom_skill.client import HubClient
from agentcom_skill.config import check_agent_id, load_settings
from agentcom_skill.errors import ConfigError
from agentcom_skill.message import MailboxBatch, Message
from agentcom_skill.store import MessageStore

FENCE = "<<<AGENTCOM_UNTRUSTED_"


@pytest.fixture
def pair(hub, tmp_path):
    alice, bob = hub.mint("alice"), hub.mint("bob")
    return hub, agent_env(hub, "alice", alice, tmp_path), agent_env(hub, "bob", bob, tmp_path), alice, bob


def run_with_stdin(*args: str, env: dict[str, str], stdin: str | None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agentcom_skill", *args],
        env=env,
        input=stdin or "",
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_of(env: dict[str, str]):
    names = {"AGENTCOM_HUB_URL": "hub_url", "AGENTCOM_AGENT_ID": "agent_id", "AGENTCOM_TOKEN": "token"}
    over = {name: env[var] for var, name in names.items()}
    return load_settings({**over, "state_dir": env["AGENTCOM_STATE_DIR"], "config": env["AGENTCOM_CONFIG"]}, env={})


# a. whatever `ack` names, `show` opens -------------------------------------------------


def test_ack_takes_in_the_message_it_waits_on_so_show_opens_it(pair):
    """The watch had stored a pushed message (seq 2) but not yet swept an earlier one still in
    the mailbox (seq 1, like a channel message): `ack 2` named #1, which `show 1` refused."""
    hub, alice_env, bob_env, alice, bob = pair
    hub.post(bob, {"to": "alice", "type": "chat", "payload": {"text": "from the channel, not swept"}})
    hub.post(bob, {"to": "alice", "type": "chat", "payload": {"text": "pushed to the watch"}})
    s = settings_of(alice_env)
    with HubClient(s.hub_url, s.token) as hub_client, MessageStore.open(s.agent_state_dir()) as store:
        whole = hub_client.poll("alice")
        pushed = [m for m in whole.messages if m.payload["text"] == "pushed to the watch"]
        as_pushed = MailboxBatch(pushed, 0)
        shown = run_check(hub_client, store, s, limit=None, now=time.time(), via="push", batch=as_pushed)
        (msg,) = shown["messages"]
        result = run_ack(hub_client, store, s, [msg["seq"]], None, time.time())
    waiting = result["hub_waiting_on"]
    assert waiting is not None and waiting["seq"] < msg["seq"], result
    out = run_cli("show", str(waiting["seq"]), env=alice_env)
    assert out.returncode == 0 and "from the channel, not swept" in out.stdout, out.stderr
    (pending,) = run_json("inbox", "--state", "pending", env=alice_env)["messages"]
    assert pending["deliveries"] == 0, "taken in as the watch's drain does: stored, never shown or leased"
    checked = run_json("check", env=alice_env)["messages"]
    assert [m["text"] for m in checked] == ["from the channel, not swept"]


# b. a numeric text -------------------------------------------------------------------------


def test_a_numeric_text_is_shown_as_text_in_every_rendering(pair):
    hub, alice_env, bob_env, alice, bob = pair
    hub.post(bob, {"to": "alice", "type": "chat", "payload": {"text": 42}})
    hub.post(bob, {"to": "alice", "type": "request", "payload": {"text": 2.5, "priority": "high"}})
    hub.post(bob, {"to": "alice", "type": "chat", "payload": {"text": ["a", "list"]}})
    prompt = run_cli("check", "--peek", "--format", "prompt", env=alice_env).stdout
    assert "[1] bob: 42\n" in prompt and "[2] bob (request, high): 2.5\n" in prompt, prompt
    assert '[3] bob: {"text":["a","list"]}' in prompt, "a text of another kind is shown, never dropped"
    as_json = run_json("check", env=alice_env)
    by_seq = sorted(as_json["messages"], key=lambda m: m["seq"])
    assert [m["text"] for m in by_seq] == ["42", "2.5", None]
    assert by_seq[0]["payload"] == {"text": 42}, "the payload stays as the hub sent it"
    assert run_cli("show", "1", "--format", "text", env=alice_env).stdout.rstrip().endswith("\n    42")
    assert "\n[1] bob: 42\n" in run_cli("show", "1", "--format", "prompt", env=alice_env).stdout
    for args in (["inbox"], ["search", "42"], ["thread", "1"]):
        for fmt in ("text", "prompt"):
            out = run_cli(*args, "--format", fmt, env=alice_env).stdout
            assert ": 42" in out, (args, fmt, out)


# c. show keeps the payload's other fields ----------------------------------------------------


def test_show_names_respond_with_action_and_channel_beside_the_text(pair):
    hub, alice_env, bob_env, alice, bob = pair
    payload = {"text": "review this", "respond_with": "structured", "action": "review", "channel": "general"}
    hub.post(bob, {"to": "alice", "type": "request", "payload": {**payload, "priority": "high"}})
    hub.post(bob, {"to": "alice", "type": "chat", "payload": {"text": "plain"}})
    run_json("check", env=alice_env)
    text = run_cli("show", "1", "--format", "text", env=alice_env).stdout
    head, fields, body = text.rstrip("\n").split("\n")
    assert "[high]" in head and body.strip() == "review this"
    # in the hub's order: both hubs write a payload's keys sorted (as Elixir orders a map's keys)
    assert fields.strip() == (
        'payload besides the text: {"action": "review", "channel": "general", "respond_with": "structured"}'
    )
    prompt = run_cli("show", "1", "--format", "prompt", env=alice_env).stdout
    inside = prompt.split(FENCE, 1)[1]
    assert '(payload besides the text: {"action": "review", "channel": "general", "respond_with": "structured"})' in (
        inside
    )
    assert "payload besides" not in run_cli("show", "2", "--format", "text", env=alice_env).stdout


# d. agent ids the real hub registers -----------------------------------------------------------


def test_config_init_takes_an_agent_id_the_real_hub_registers(hub, tmp_path):
    zoe = "Zoë 🔷"
    env = agent_env(hub, zoe, hub.mint(zoe), tmp_path)
    token = env.pop("AGENTCOM_TOKEN")
    (tmp_path / "zoe.token").write_text(token)
    out = run_cli("config", "init", "--token-file", str(tmp_path / "zoe.token"), env=env)
    assert out.returncode == 0, out.stderr
    hub.post(hub.mint("bob"), {"to": zoe, "type": "chat", "payload": {"text": "hi Zoë"}})
    (msg,) = run_json("check", env=env)["messages"]
    assert msg["text"] == "hi Zoë"
    status = run_json("status", env=env)
    assert status["agent_id"] == zoe
    folder = Path(status["state_dir"])
    assert folder.parent == tmp_path / "state" and folder.name.isascii() and folder.name.startswith("Zo___@")


@pytest.mark.parametrize("agent_id", ["Zoë 🔷", "a b", "../x", "用户", "👨‍👩‍👧" * 128, "e\u0301" * 128, "x" * 128])
def test_agent_ids_the_hub_accepts_are_taken_and_their_folder_is_one_safe_name(tmp_path, agent_id):
    assert check_agent_id(f" {agent_id} ", "a test") == agent_id
    s = load_settings({"hub_url": "http://h:4000", "agent_id": agent_id, "token": "t" * 16}, env={})
    name = s.replace(state_dir=tmp_path).agent_state_dir().name
    assert name.isascii() and "/" not in name and len(name.encode()) <= 255 and name not in (".", "..")


@pytest.mark.parametrize("agent_id", ["", "   ", "bad\x1bid", "line\nbreak", "x" * 129, "\ud800x", "é" * 129])
def test_agent_ids_the_hub_refuses_or_no_terminal_carries_are_refused(agent_id):
    with pytest.raises(ConfigError, match="not a valid agent id"):
        check_agent_id(agent_id, "a test")


def test_the_state_folder_of_every_id_the_old_rule_took_is_unchanged(tmp_path):
    s = load_settings({"hub_url": "http://h:4000", "agent_id": "a" * 128, "token": "t" * 16}, env={})
    assert s.replace(state_dir=tmp_path).agent_state_dir().name.startswith("a" * 128 + "@h_4000-")


# e. replacing only the token ------------------------------------------------------------------


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


def test_config_token_replaces_only_the_token_line_and_never_prints_it(pair, tmp_path):
    hub, alice_env, bob_env, alice, bob = pair
    env = {k: v for k, v in alice_env.items() if k != "AGENTCOM_TOKEN"}
    cfg = Path(env["AGENTCOM_CONFIG"])
    cfg.write_text(
        "# mine, by hand\n"
        f'hub_url = "{hub.url}"\nagent_id = "alice"\ntoken = "{"0" * 64}"\n'
        'capabilities = ["code"]\nstatus = "reviewing"\n\n[wake]\nmode = "command"\ncommand = ["cat"]\n'
    )
    before = cfg.read_text().splitlines()
    assert run_cli("check", env=env).returncode == 3, "the old token is refused"
    out = run_with_stdin("config", "token", "-", env=env, stdin=alice + "\n")
    assert out.returncode == 0, out.stderr
    assert alice not in out.stdout + out.stderr and alice[-4:] not in out.stdout + out.stderr
    assert "wrote the new token to config file" in out.stdout
    after = cfg.read_text().splitlines()
    assert [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b] == [3], "only the token line"
    assert after[3] == f'token = "{alice}"' and private(cfg)
    assert run_cli("check", env=env).returncode == 0
    assert run_json("config", "show", env=env)["capabilities"] == ["code"]


def test_config_token_writes_the_token_file_the_config_names(pair, tmp_path):
    hub, alice_env, bob_env, alice, bob = pair
    env = {k: v for k, v in alice_env.items() if k != "AGENTCOM_TOKEN"}
    old_file, new_file = tmp_path / "alice.token", tmp_path / "new.token"
    old_file.write_text("0" * 64)
    assert run_cli("config", "init", "--token-file", str(old_file), "--status", "on call", env=env).returncode == 0
    cfg = Path(env["AGENTCOM_CONFIG"])
    config_before = cfg.read_bytes()
    new_file.write_text(alice + "\n")
    out = run_cli("config", "token", "--token-file", str(new_file), env=env)
    assert out.returncode == 0 and f"to token file {old_file}" in out.stdout and alice not in out.stdout
    assert old_file.read_text().strip() == alice and private(old_file) and cfg.read_bytes() == config_before
    assert run_json("status", env=env)["status"] == "on call"
    with_env_token = run_cli("config", "token", "--token-file", str(new_file), env={**env, "AGENTCOM_TOKEN": bob})
    assert "AGENTCOM_TOKEN is set in the environment" in with_env_token.stderr and bob not in with_env_token.stderr


@pytest.mark.parametrize(
    "args,stdin,needle",
    [
        ([], None, "--token-file FILE or on stdin"),
        (["-"], "two words", "malformed"),
        (["-"], "", "malformed"),
        (["nonsense"], None, "--token-file FILE or on stdin"),
    ],
)
def test_config_token_refuses_what_is_not_one_token_and_changes_nothing(pair, args, stdin, needle):
    hub, alice_env, *_ = pair
    cfg = Path(alice_env["AGENTCOM_CONFIG"])
    assert run_cli("config", "init", env=alice_env).returncode == 0
    before = cfg.read_bytes()
    out = run_with_stdin("config", "token", *args, env=alice_env, stdin=stdin)
    assert out.returncode == 2 and needle in out.stderr and out.stdout == "", out.stderr
    assert cfg.read_bytes() == before and "Traceback" not in out.stderr


def test_config_token_without_a_config_file_says_so(pair):
    hub, alice_env, *_ = pair
    out = run_with_stdin("config", "token", "-", env=alice_env, stdin="a" * 64)
    assert out.returncode == 2 and "no config file at" in out.stderr and "config init" in out.stderr


def test_config_init_force_keeps_the_settings_it_does_not_replace(pair, tmp_path):
    hub, alice_env, *_ = pair
    env = {k: v for k, v in alice_env.items() if k != "AGENTCOM_TOKEN"}
    cfg = Path(env["AGENTCOM_CONFIG"])
    cfg.write_text(
        f'hub_url = "{hub.url}"\nagent_id = "alice"\ntoken = "{"0" * 64}"\ncapabilities = ["code", "review"]\n'
        'lease_seconds = 120\n\n[wake]\nmode = "command"\ncommand = ["cat"]\nwindow = 2.5\n'
    )
    (tmp_path / "reset.token").write_text(alice_env["AGENTCOM_TOKEN"])
    out = run_cli("config", "init", "--force", "--token-file", str(tmp_path / "reset.token"), env=env)
    assert out.returncode == 0, out.stderr
    assert "kept from the file it replaced: capabilities, lease_seconds, wake" in out.stdout
    assert "dropped from the file it replaced: token" in out.stdout
    shown = run_json("config", "show", env=env)
    assert shown["capabilities"] == ["code", "review"] and shown["lease_seconds"] == 120
    assert shown["wake"]["mode"] == "command" and shown["wake"]["window"] == 2.5
    assert shown["sources"]["token"].startswith("token file") and private(cfg)
    assert run_cli("check", env=env).returncode == 0


# f. the hub's seq restarted --------------------------------------------------------------------


def test_status_drops_an_ack_above_a_restarted_seq(pair):
    hub, alice_env, bob_env, alice, bob = pair
    with MessageStore.open(settings_of(alice_env).agent_state_dir()) as store, store.write():
        store.set_meta("hub_acked", 54)  # acked before the hub's seq started again
    assert "acked up to seq 54" in run_cli("status", env=alice_env).stdout, "nothing tells yet"
    hub.post(bob, {"to": "alice", "type": "chat", "payload": {"text": "numbered afresh"}})
    st = run_json("status", env=alice_env)
    assert st["hub_acked"] is None and any("seq restarted" in w for w in st["warnings"]), st
    assert "acked up to seq" not in run_cli("status", env=alice_env).stdout


def test_check_drops_an_ack_above_a_restarted_seq(pair):
    hub, alice_env, bob_env, alice, bob = pair
    with MessageStore.open(settings_of(alice_env).agent_state_dir()) as store, store.write():
        store.set_meta("hub_acked", 54)
    hub.post(bob, {"to": "alice", "type": "chat", "payload": {"text": "numbered afresh"}})
    run_json("check", env=alice_env)
    with MessageStore.open(settings_of(alice_env).agent_state_dir()) as store:
        assert store.get_meta("hub_acked") is None


def msg(seq: int) -> Message:
    return Message(seq, f"{seq:016x}", "bob", "alice", "chat", {"text": "x"}, None, None)


@pytest.mark.parametrize(
    "batch,acked,restarted",
    [
        (MailboxBatch([msg(1), msg(3)], 3), 54, True),
        (MailboxBatch([], 0), 54, False),  # an empty mailbox tells nothing
        (MailboxBatch([msg(55)], 55), 54, False),
        (MailboxBatch([msg(54)], 54), 54, False),  # an ack not yet applied by the hub
        (MailboxBatch([msg(1)], 1), None, False),
        (MailboxBatch([msg(1)], 1), True, False),
    ],
)
def test_seq_restarted(batch, acked, restarted):
    assert seq_restarted(batch, acked) is restarted


# h. the pong is looked for closely --------------------------------------------------------------


def test_ping_looks_for_its_pong_closely_at_first_then_backs_off(pair):
    """The pong came within 100 ms but was found at the next backed-off look (0.1, 0.2, 0.4 s
    apart), 0.4 s late: the first two seconds are looked at every 50 ms."""
    hub, alice_env, *_ = pair
    now = [0.0]
    sleeps: list[tuple[float, float]] = []

    def sleep(seconds: float) -> None:
        sleeps.append((now[0], seconds))
        now[0] += seconds

    result = ping("bob", 6.0, settings=settings_of(alice_env), clock=lambda: now[0], sleep=sleep)
    assert result["pong_id"] is None
    close = [d for at, d in sleeps if at < 2.0]
    assert len(close) >= 39 and max(close) <= 0.05 + 1e-9, close
    later = [d for at, d in sleeps if at >= 2.0]
    assert later[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0]) and max(later) == 1.0, "then backing off"


# i. peers' statuses --------------------------------------------------------------------------------


def test_log_shows_the_status_the_hub_lists_and_how_old_each_is(pair):
    hub, alice_env, bob_env, alice, bob = pair
    run_cli("send", "alice", "--type", "status", "--payload", '{"status": "busy"}', env=bob_env)
    run_json("check", env=alice_env)
    assert "bob: busy (as of " in run_cli("log", "--format", "text", env=alice_env).stdout
    with ws_connect(hub) as ws:
        ws_call(ws, {"type": "identify", "agent_id": "bob", "token": bob, "status": "reviewing PR 12"})
        listed = run_json("agents", env=alice_env)["agents"]
        assert [a["status"] for a in listed if a["agent_id"] == "bob"] == ["reviewing PR 12"]
    text = run_cli("log", "--format", "text", env=alice_env).stdout
    assert re.search(r"\n  bob: reviewing PR 12 \(as of \d+s ago\)", text), text
    prompt = run_cli("log", "--format", "prompt", env=alice_env).stdout
    assert "bob: reviewing PR 12 (as of " in prompt.split(FENCE)[-1]
    assert run_json("log", env=alice_env)["roster"]["bob"]["status"] == "reviewing PR 12"


def test_a_status_heard_from_the_hub_list_is_kept_only_when_it_changed(tmp_path):
    s = load_settings({"hub_url": "http://h:4000", "agent_id": "alice", "token": "t" * 16}, env={})
    with MessageStore.open(tmp_path / "s") as store:
        note_listed_statuses(store, s, [{"agent_id": "bob", "status": "x"}, {"agent_id": "alice"}], 100.0)
        note_listed_statuses(store, s, [{"agent_id": "bob", "status": "x"}, {"agent_id": 3}], 200.0)
        note_listed_statuses(store, s, [{"agent_id": "alice", "status": "me"}], 300.0)
        assert store.peers() == {"bob": {"status": "x", "timestamp": None, "id": None, "at": 100.0}}


def test_a_running_watch_keeps_the_statuses_the_hub_pushes(pair, tmp_path):
    """A status set over a peer's WebSocket reaches no mailbox: the hub pushes it to connected
    sockets (`agent_joined`, `status_changed`), and the watch puts it in the roster."""
    hub, alice_env, bob_env, alice, bob = pair
    watch = start_watch(alice_env, tmp_path / "alice.jsonl")
    try:
        with ws_connect(hub) as ws:
            ws_call(ws, {"type": "identify", "agent_id": "bob", "token": bob, "status": "starting"})
            eventually(lambda: "bob: starting (as of" in run_cli("log", "--format", "text", env=alice_env).stdout, "a")
            ws.send(json.dumps({"type": "status", "status": "deploying"}))
            eventually(lambda: "bob: deploying (as of" in run_cli("log", "--format", "text", env=alice_env).stdout, "b")
    finally:
        stop(watch)


def test_checks_periodic_look_at_the_agent_list_refreshes_the_roster(pair):
    hub, alice_env, bob_env, alice, bob = pair
    with ws_connect(hub) as ws:
        ws_call(ws, {"type": "identify", "agent_id": "bob", "token": bob, "status": "on call"})
        run_json("check", env=alice_env)  # the first check looks at /api/agents (then every few minutes)
    assert run_json("log", env=alice_env)["roster"]["bob"]["status"] == "on call"
