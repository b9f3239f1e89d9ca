"""Wake settings that cannot fail silently: the [wake] table is complete for its mode or the
watch does not start (exit 2, naming the key); a wake command is a list, or a string run by
the shell only when `shell = true` says so; a failing command's stderr is shown; the last wake
error stays in `status`, `status --json` and `check`'s warnings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import agent_env, run_cli, run_json
from test_watch import WatchProcess

from agentcom_skill.config import load_settings
from agentcom_skill.errors import ConfigError


def settings_with(tmp_path: Path, wake: str):
    config = tmp_path / "c.toml"
    config.write_text("[wake]\n" + wake + "\n")
    return load_settings(
        {"hub_url": "http://127.0.0.1:9", "agent_id": "alice", "token": "t" * 32, "config": str(config)}, env={}
    )


@pytest.mark.parametrize(
    "wake, message",
    [
        ('mode = "command"', "wake.command is missing"),
        ('mode = "agent"\nwindow = 1', "wake.url is missing"),
        ('mode = "wake"', "wake.url is missing"),
        ('mode = "a2a"\ntoken = "tttttttttttt"', "wake.url is missing"),
        ("window = 5", "wake.url is missing"),
        ('mode = "command"\ncommand = "cat >> /tmp/x"', "wake.command"),
        ('mode = "command"\ncommand = ["cat"]\nshell = true', "one string"),
        ('mode = "command"\ncommand = []', "non-empty list"),
        ('mode = "command"\ncommand = ["cat"]\nshell = "yes"', "wake.shell"),
        ('mode = "a2a"\nurl = "http://127.0.0.1:18789"', "JSON-RPC endpoint"),
        ('mode = "a2a"\nurl = "http://h/a2a/v1"\ncontext = "room"', "wake.context"),
        ('mode = "a2a"\nurl = "http://h/a2a/v1"\nanswer_budget = 0', "wake.answer_budget"),
        ('mode = "a2a"\nurl = "http://h/a2a/v1"\nanswer_budget = 2.5', "wake.answer_budget"),
        ('mode = "a2a"\nurl = "http://h/a2a/v1"\nrequests_per_minute = true', "wake.requests_per_minute"),
        ('mode = "a2a"\nurl = "http://h/a2a/v1"\npoll_every = 3', "'wake.poll_every' (no such setting)"),
        ('mode = "telepathy"', "wake.mode"),
        ('mode = "command"\ncommand = ["cat"]\ntimeout = nan', "wake.timeout in"),
        ('mode = "command"\ncommand = ["cat"]\nwindow = inf', "wake.window in"),
    ],
)
def test_an_incomplete_or_wrong_wake_table_is_a_config_error_naming_the_key(tmp_path, wake, message):
    with pytest.raises(ConfigError) as err:
        settings_with(tmp_path, wake)
    assert message in str(err.value)


def test_valid_wake_tables(tmp_path):
    assert settings_with(tmp_path, 'mode = "command"\ncommand = ["my-runtime", "--stdin"]').wake.argv() == [
        "my-runtime",
        "--stdin",
    ]
    shell = settings_with(tmp_path, 'mode = "command"\ncommand = "cat >> out.txt"\nshell = true').wake
    assert shell.argv() == ["/bin/sh", "-c", "cat >> out.txt"]
    a2a = settings_with(
        tmp_path, 'mode = "a2a"\nurl = "http://127.0.0.1:18789/a2a/v1/"\ntoken = "tttttttttttt"\ncontext = "thread"'
    ).wake
    assert (a2a.url, a2a.context, a2a.answer_budget, a2a.answer_window) == (
        "http://127.0.0.1:18789/a2a/v1",
        "thread",
        6,
        600.0,
    )
    assert not settings_with(tmp_path, "").wake.configured, "an empty [wake] table is no wake"


def test_the_watch_does_not_start_with_a_wake_that_cannot_work(hub, tmp_path):
    env = agent_env(hub, "alice", hub.mint("alice"), tmp_path)
    (tmp_path / "alice.toml").write_text('[wake]\nmode = "command"\n')
    out = subprocess.run(
        [sys.executable, "-m", "agentcom_skill", "watch"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "wake.command is missing" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_shell_command_gets_the_prompt_ending_with_a_newline(hub, tmp_path):
    alice, bob = hub.mint("alice"), hub.mint("bob")
    env = agent_env(hub, "alice", alice, tmp_path)
    target = tmp_path / "woken.txt"
    (tmp_path / "alice.toml").write_text(
        f'[wake]\nmode = "command"\ncommand = "cat >> {target}"\nshell = true\nwindow = 0.2\n'
    )
    w = WatchProcess(env, tmp_path)
    try:
        w.wait_for("connected")
        hub.post(bob, {"to": "alice", "payload": {"text": "first"}})
        w.wait_for("woke")
        text = target.read_text()
        assert "first" in text and text.endswith("\n")
    finally:
        w.stop()


def test_a_failing_command_shows_its_stderr_and_the_error_stays_in_status_and_check(hub, tmp_path):
    alice, bob = hub.mint("alice"), hub.mint("bob")
    env = agent_env(hub, "alice", alice, tmp_path)
    (tmp_path / "alice.toml").write_text(
        '[wake]\nmode = "command"\nshell = true\nwindow = 0.2\n'
        'command = "echo runtime not logged in >&2; echo second line >&2; exit 3"\n'
    )
    w = WatchProcess(env, tmp_path)
    try:
        w.wait_for("connected")
        msg = hub.post(bob, {"to": "alice", "payload": {"text": "hello"}}).json()["id"]
        failed = w.wait_for("wake_failed")
        assert (
            "exited 3" in failed[0]["text"]
            and "runtime not logged in" in failed[0]["text"]
            and "second line" in failed[0]["text"]
        )
        st = run_json("status", env=env)
        error = st["watch"]["last_wake_error"]
        assert error["status"] == "exit 3" and "runtime not logged in" in error["detail"] and "command" in error["fix"]
        assert any("last wake failed" in h for h in st["hazards"])
        text = run_cli("status", env=env).stdout
        assert "hazard: the watch's last wake failed" in text and "hazards: none" not in text
        checked = run_json("check", env=env)
        assert [m["id"] for m in checked["messages"]] == [msg], "the message still reaches check"
        assert any("runtime not logged in" in x for x in checked["warnings"])
        prompt = run_cli("check", "--format", "prompt", env=env).stdout
        assert "[AgentCom] warning: the watch's last wake failed" in prompt
        doctor = {c["check"]: c for c in json.loads(run_cli("doctor", "--json", env=env).stdout)["checks"]}
        assert doctor["watch"]["outcome"] == "warn" and "runtime not logged in" in doctor["watch"]["detail"]
    finally:
        w.stop()
    assert json.loads(run_cli("status", "--json", env=env).stdout)["watch"] is None
