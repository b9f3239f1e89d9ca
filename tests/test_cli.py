"""The CLI through real subprocesses: commands, exit codes, one-line errors, no token anywhere."""

from __future__ import annotations

import json
import os
import stat

import pytest
from conftest import agent_env, free_port, run_cli, run_json


@pytest.fixture
def pair(hub, tmp_path):
    alice, bob = hub.mint("alice"), hub.mint("bob")
    return hub, agent_env(hub, "alice", alice, tmp_path), agent_env(hub, "bob", bob, tmp_path), alice, bob


def assert_clean_failure(out, code, *secrets):
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("agentcom: ")
    for s in secrets:
        assert s not in out.stdout + out.stderr


def test_send_check_ack_round_trip(pair):
    hub, alice_env, bob_env, *_ = pair
    out = run_cli("send", "alice", "hello there", "--payload", '{"priority": "high"}', env=bob_env)
    assert out.returncode == 0
    msg_id = out.stdout.strip().rsplit("(id ", 1)[1].rstrip(")")
    assert out.stdout.startswith("sent chat to alice") and len(msg_id) == 16
    text = run_cli("check", "--format", "text", env=alice_env)
    assert text.returncode == 0 and "hello there" in text.stdout and "[high]" in text.stdout
    reply = run_json("send", "bob", "got it", "--reply-to", msg_id, "--type", "response", env=alice_env)
    assert reply["reply_to"] == msg_id
    checked = run_json("check", env=bob_env)
    assert checked["messages"][0]["reply_to"] == msg_id and checked["messages"][0]["text"] == "got it"
    assert run_json("ack", env=alice_env)["acked"][0]["id"] == msg_id
    assert run_json("ack", env=alice_env)["acked"] == [], "ack is idempotent"


def test_broadcast_from_the_cli(pair):
    hub, alice_env, bob_env, *_ = pair
    run_cli("send", "broadcast", "all hands", env=alice_env)
    msgs = run_json("check", env=bob_env)["messages"]
    assert msgs[0]["broadcast"] is True and msgs[0]["why"] == "broadcast"


def test_ack_finishes_exactly_what_it_names(pair):
    """Guarantee 4: `ack SEQ` finishes that message only (an urgent one listed first does not
    take the one above it along); `--through` and bare ack finish shown ones; an unknown or
    never-shown seq is exit 2 and changes nothing."""
    hub, alice_env, bob_env, *_ = pair
    run_cli("send", "alice", "first", env=bob_env)
    run_cli("send", "alice", "urgent", "--priority", "urgent", env=bob_env)
    run_cli("send", "alice", "third", env=bob_env)
    msgs = run_json("check", env=alice_env)["messages"]
    assert [m["text"] for m in msgs] == ["urgent", "first", "third"]
    first, urgent, third = sorted(m["seq"] for m in msgs)
    acked = run_json("ack", str(urgent), env=alice_env)
    assert [a["seq"] for a in acked["acked"]] == [urgent] and acked["unacked"] == 2
    assert acked["hub_acked_up_to"] is None, "#first is still open below it"
    for bad in ("99999", "abc"):
        out = run_cli("ack", bad, env=alice_env)
        assert_clean_failure(out, 2)
    run_cli("send", "alice", "unseen", env=bob_env)
    assert_clean_failure(run_cli("ack", str(hub.poll("alice", pair[3])["messages"][-1]["seq"]), env=alice_env), 2)
    run_cli("send", "alice", "fourth", "--priority", "high", env=bob_env)
    assert [m["text"] for m in run_json("check", "--max", "1", env=alice_env)["messages"]] == ["fourth"]
    unseen = [m for m in hub.poll("alice", pair[3])["messages"] if m["payload"]["text"] == "unseen"][0]["seq"]
    out = run_cli("ack", str(unseen), env=alice_env)
    assert_clean_failure(out, 2)
    assert "never shown" in out.stderr
    assert run_json("ack", "--through", str(first), env=alice_env)["acked"] == [{"id": msgs[1]["id"], "seq": first}]
    rest = run_json("ack", env=alice_env)
    assert [a["seq"] for a in rest["acked"]] == [third, third + 2] and rest["unacked"] == 0
    again = run_json("ack", str(urgent), env=alice_env)
    assert again["acked"] == [] and again["already_finished"][0]["seq"] == urgent
    assert [m["text"] for m in run_json("check", env=alice_env)["messages"]] == ["unseen"]


def test_hub_down_is_exit_4(pair, tmp_path):
    hub, alice_env, _, alice, _ = pair
    env = {**alice_env, "AGENTCOM_HUB_URL": f"http://127.0.0.1:{free_port()}"}
    out = run_cli("check", env=env)
    assert_clean_failure(out, 4, alice)
    assert "unreachable" in out.stderr


def test_wrong_token_is_exit_3(pair):
    """Exit 3; guarantee 9: the refused token is not echoed in the error."""
    hub, alice_env, *_ = pair
    out = run_cli("check", env={**alice_env, "AGENTCOM_TOKEN": "e" * 64})
    assert_clean_failure(out, 3, "e" * 64)
    out = run_cli("send", "bob", "x", env={**alice_env, "AGENTCOM_TOKEN": "e" * 64})
    assert_clean_failure(out, 3, "e" * 64)


@pytest.mark.parametrize("payload", ["{nope", "[1, 2]", '"text"', "3"])
def test_bad_payload_is_exit_2(pair, payload):
    hub, alice_env, *_ = pair
    out = run_cli("send", "bob", "x", "--payload", payload, env=alice_env)
    assert_clean_failure(out, 2)
    assert "--payload" in out.stderr


def test_missing_settings_name_the_setting_and_where_to_set_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCOM_")}
    env["AGENTCOM_CONFIG"] = str(tmp_path / "none.toml")
    out = run_cli("check", env=env)
    assert_clean_failure(out, 2)
    assert "hub_url" in out.stderr and "AGENTCOM_HUB_URL" in out.stderr and "none.toml" in out.stderr
    env["AGENTCOM_HUB_URL"] = "http://127.0.0.1:9"
    env["AGENTCOM_AGENT_ID"] = "alice"
    out = run_cli("check", env=env)
    assert_clean_failure(out, 2)
    assert "token" in out.stderr and "AGENTCOM_TOKEN" in out.stderr


def test_invalid_config_file_is_exit_2(pair, tmp_path):
    hub, alice_env, *_ = pair
    cfg = tmp_path / "bad.toml"
    for text, needle in (
        ("capabilities = 'x' = y", "TOML"),
        ("lease_seconds = 'long'", "lease_seconds"),
        ("colour = 1", "colour"),
    ):
        cfg.write_text(text)
        out = run_cli("check", env={**alice_env, "AGENTCOM_CONFIG": str(cfg)})
        assert_clean_failure(out, 2)
        assert needle in out.stderr


def test_json_errors_go_to_stdout_too(pair):
    hub, alice_env, *_ = pair
    out = run_cli("check", "--json", env={**alice_env, "AGENTCOM_TOKEN": "e" * 64})
    assert out.returncode == 3
    assert json.loads(out.stdout)["error"]["kind"] == "auth"


def test_token_file_and_precedence(pair, tmp_path):
    hub, alice_env, _, alice, _ = pair
    token_file = tmp_path / "token"
    token_file.write_text(alice + "\n")
    env = {k: v for k, v in alice_env.items() if k != "AGENTCOM_TOKEN"}
    assert run_cli("check", env={**env, "AGENTCOM_TOKEN_FILE": str(token_file)}).returncode == 0
    # the command line beats the environment
    out = run_cli("--token-file", str(token_file), "check", env={**alice_env, "AGENTCOM_TOKEN": "e" * 64})
    assert out.returncode == 0, out.stderr
    out = run_cli("check", env={**env, "AGENTCOM_TOKEN_FILE": str(tmp_path / "missing")})
    assert_clean_failure(out, 2)


def test_config_init_register_and_show(hub, tmp_path):
    """Guarantee 9: the registered token lands only in the 0600 config file, masked everywhere else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCOM_")}
    cfg = tmp_path / "conf" / "agentcom.toml"
    env.update(AGENTCOM_CONFIG=str(cfg), AGENTCOM_STATE_DIR=str(tmp_path / "state"))
    out = run_cli(
        "--hub-url",
        hub.url,
        "--agent-id",
        "newbie",
        "config",
        "init",
        "--register",
        "--capabilities",
        "code, review",
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    token = [line for line in cfg.read_text().splitlines() if line.startswith("token")][0].split('"')[1]
    assert token not in out.stdout + out.stderr
    shown = run_json("config", "show", env=env)
    assert shown["token"].startswith("****") and token not in json.dumps(shown)
    assert shown["capabilities"] == ["code", "review"] and shown["agent_id"] == "newbie"
    assert shown["sources"]["token"].startswith("config file")
    assert run_json("check", env=env)["messages"] == []
    again = run_cli("--hub-url", hub.url, "--agent-id", "newbie", "config", "init", "--register", "--force", env=env)
    assert_clean_failure(again, 2)
    assert "already registered" in again.stderr and "--token-file" in again.stderr, "the way out is named"
    assert "agentcom hub token newbie --db" in again.stderr
    assert cfg.read_text().count(token) == 1, "the config written before stands"


def test_verbose_logs_http_calls_without_the_token(pair):
    """Guarantee 9: -v logs every HTTP call, never the token."""
    hub, alice_env, _, alice, _ = pair
    out = run_cli("-v", "check", env=alice_env)
    assert out.returncode == 0
    assert "GET /api/mailbox/alice?since=0 -> 200" in out.stderr
    assert alice not in out.stderr + out.stdout


def test_status_and_agents(pair):
    hub, alice_env, bob_env, alice, _ = pair
    run_cli("send", "alice", "x", env=bob_env)
    st = run_json("status", env=alice_env)
    assert st["hub"]["ok"] is True and st["mailbox"] == 1 and st["token"].startswith("****")
    assert alice not in json.dumps(st)
    assert run_json("agents", env=alice_env) == {"agents": []}
    text = run_cli("status", env=alice_env)
    assert text.returncode == 0 and "messages: 0 pending" in text.stdout and "watch: not running" in text.stdout


def test_show_prints_a_message_in_full_and_unknown_seq_is_exit_2(pair):
    hub, alice_env, bob_env, *_ = pair
    run_cli("send", "alice", "line one\nline two", env=bob_env)
    seq = run_json("check", env=alice_env)["messages"][0]["seq"]
    out = run_cli("show", str(seq), "--format", "text", env=alice_env)
    assert out.returncode == 0 and "\n    line one\n    line two\n" in out.stdout, (
        "its lines, indented under the header"
    )
    run_json("ack", env=alice_env)
    again = run_json("show", str(seq), env=alice_env)
    assert again["text"] == "line one\nline two" and again["state"] == "done", (
        "show works from the local copy after an ack"
    )
    assert_clean_failure(run_cli("show", "999", env=alice_env), 2)


def test_control_characters_never_reach_the_terminal(pair):
    """Guarantee 9: escape, bell and bidi characters from another agent are neutralised."""
    hub, alice_env, bob_env, *_ = pair
    run_cli("send", "alice", "red \x1b[31malert\x1b[0m \x07 \u202eevil", env=bob_env)
    out = run_cli("check", env=alice_env)
    assert out.returncode == 0
    for ch in ("\x1b", "\x07", "\u202e"):
        assert ch not in out.stdout
    assert "\\x1b[31malert" in out.stdout


def test_exit_codes_are_in_help():
    out = run_cli("--help", env=dict(os.environ))
    assert out.returncode == 0
    for code in range(2, 8):
        assert f"  {code}  " in out.stdout


def test_lone_surrogates_from_the_hub_do_not_crash_any_output(pair):
    """Guarantee 8: text the hub sends as JSON escapes of lone surrogates is printed safely."""
    hub, alice_env, bob_env, alice, bob = pair
    import requests

    requests.post(
        hub.url + "/api/message",
        data=b'{"to":"alice","payload":{"text":"bad \\ud800 text"}}',
        headers={"Authorization": f"Bearer {bob}", "content-type": "application/json"},
    ).raise_for_status()
    for args in (["--peek"], ["--peek", "--format", "prompt"], ["--json"]):
        out = run_cli("check", *args, env=alice_env)
        assert out.returncode == 0, out.stderr
        assert "bad" in out.stdout and "ud800" in out.stdout


def test_agent_ids_are_url_encoded_in_paths(hub, tmp_path):
    """HTTP: an agent id with reserved URL characters still reaches its own mailbox."""
    odd, bob = hub.mint("ops@team:1+x"), hub.mint("bob")
    env = agent_env(hub, "ops@team:1+x", odd, tmp_path)
    run_cli("send", "ops@team:1+x", "hi", env=agent_env(hub, "bob", bob, tmp_path))
    assert [m["text"] for m in run_json("check", env=env)["messages"]] == ["hi"]
    assert len(run_json("ack", env=env)["acked"]) == 1


def test_a_hub_never_reached_leaves_no_state_folder_behind(hub, tmp_path):
    """A mistyped hub URL or agent id: check, status and doctor fail, and leave nothing behind
    (the folder is per hub and agent id, so each typo would leave one). A folder with history
    stays whatever the hub does."""
    alice = hub.mint("alice")
    env = agent_env(hub, "alice", alice, tmp_path)
    state = tmp_path / "state"
    typo = {**env, "AGENTCOM_HUB_URL": f"http://127.0.0.1:{free_port()}"}
    for command, code in (("check", 4), ("status", 4), ("doctor", 4)):
        assert run_cli(command, env=typo).returncode == code, command
        assert not state.exists() or list(state.iterdir()) == [], (command, list(state.iterdir()))
    assert run_cli("check", env={**env, "AGENTCOM_AGENT_ID": "alcie"}).returncode == 3
    assert list(state.iterdir()) == []
    assert run_cli("check", env=env).returncode == 0
    (kept,) = state.iterdir()
    assert run_cli("check", env={**env, "AGENTCOM_HUB_URL": hub.url + "/nohub"}).returncode == 5
    assert run_cli("check", env={**env, "AGENTCOM_TOKEN": "e" * 64}).returncode == 3
    assert (kept / "messages.sqlite3").exists() and list(state.iterdir()) == [kept], "a folder made before stays"
