"""Wake settings that cannot fail silently: the [wake] table is complete for its mode or the
watch does not start (exit 2, naming the key); a wake command is a list, or a string run by
the shell only when `shell = true` says so; a failing command's stderr is shown; the last wake
error stays in `status`, `status --json` and `check`'s warnings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


def test_the_environment_sets_the_wake_target_and_keeps_the_rest_of_the_users_table(tmp_path):
    """How the OpenClaw plugin points its watch at itself: AGENTCOM_WAKE_MODE, _URL and _TOKEN
    replace the target only; the user's other [wake] settings stay."""
    config = tmp_path / "c.toml"
    config.write_text('[wake]\nmode = "agent"\nurl = "http://127.0.0.1:18789"\nwindow = 0.7\nanswer_budget = 3\n')
    base = {"hub_url": "http://127.0.0.1:9", "agent_id": "alice", "token": "t" * 32, "config": str(config)}
    env = {
        "AGENTCOM_WAKE_MODE": "a2a",
        "AGENTCOM_WAKE_URL": "http://127.0.0.1:5555/agentcom/a2a",
        "AGENTCOM_WAKE_TOKEN": "p" * 64,
    }
    wake = load_settings(base, env=env).wake
    assert (wake.mode, wake.url, wake.token) == ("a2a", "http://127.0.0.1:5555/agentcom/a2a", "p" * 64)
    assert (wake.window, wake.answer_budget) == (0.7, 3), "the user's own settings stay"
    config.write_text("")  # no [wake] table at all: the environment alone makes a complete one
    assert load_settings(base, env=env).wake.configured
    with pytest.raises(ConfigError) as err:  # checked as a table's value would be, and says where it came from
        load_settings(base, env={**env, "AGENTCOM_WAKE_URL": "http://127.0.0.1:5555"})
    assert "JSON-RPC endpoint" in str(err.value) and "AGENTCOM_WAKE_URL" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_settings(base, env={**env, "AGENTCOM_WAKE_MODE": "telepathy"})
    assert "AGENTCOM_WAKE_MODE" in str(err.value)
    assert not load_settings(base, env={}).wake.configured, "without them nothing changes"


def test_a_watch_whose_parent_dies_stops_and_frees_the_lock(hub, tmp_path):
    """`watch --parent-pid`: a parent killed hard (SIGKILL: it cannot stop its child) leaves no
    watch behind holding watch.lock."""
    env = agent_env(hub, "alice", hub.mint("alice"), tmp_path)
    err = tmp_path / "watch.err"
    # the parent: a shell that starts the watch and waits; the watch's parent pid is the shell's
    parent = subprocess.Popen(
        ["/bin/sh", "-c", f'"{sys.executable}" -m agentcom_skill watch --jsonl --parent-pid $$ 2>"{err}"; :'],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        connected = json.loads(parent.stdout.readline())
        while connected["event"] != "connected":
            connected = json.loads(parent.stdout.readline())
        status = run_json("status", env=env)["watch"]
        watch_pid = status["pid"]
        parent.kill()
        parent.wait(timeout=30)
        from hubprocess import eventually

        eventually(lambda: "parent process" in err.read_text() and "stopped" in err.read_text(), "the watch stopped")
        eventually(lambda: run_json("status", env=env)["watch"] is None, "no live watch any more")
        with pytest.raises(ProcessLookupError):
            for _ in range(100):  # reaped by init by now, or about to be
                os.kill(watch_pid, 0)
                time.sleep(0.1)
        second = WatchProcess(env, tmp_path)  # the lock is free for the next one
        try:
            second.wait_for("connected")
        finally:
            second.proc.terminate()
            second.proc.wait(timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()


ACKING_AGENT = r"""
import pathlib, re, subprocess, sys, time
prompt = sys.stdin.read()
refs = re.findall(r"^\[([0-9a-f]{16}|\d+)\] ", prompt, re.M)
with pathlib.Path(sys.argv[1]).open("a") as log:
    for ref in refs:
        run = [sys.executable, "-m", "agentcom_skill"]
        replied = subprocess.run([*run, "reply", ref, "the answer"], capture_output=True, text=True)
        acked = subprocess.run([*run, "ack", ref], capture_output=True, text=True)
        log.write(f"{ref} {replied.returncode} {acked.returncode} {acked.stderr.strip()}\n")
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.parametrize("runs_for", [0, 120], ids=["exits", "runs-past-its-timeout"])
def test_a_command_wake_can_ack_what_it_was_handed(hub, tmp_path, runs_for):
    """Issue 27, item 2: the command the wake runs answers and acks (`agentcom reply` and
    `agentcom ack` of the ref in its prompt): the ack works, as the prompt says it should, also
    when the command then runs past its timeout; the message is finished, answered once."""
    alice, bob = hub.mint("alice"), hub.mint("bob")
    env = agent_env(hub, "alice", alice, tmp_path)
    bob_env = agent_env(hub, "bob", bob, tmp_path)
    script, log = tmp_path / "agent.py", tmp_path / "agent.log"
    script.write_text(ACKING_AGENT)
    command = [sys.executable, str(script), str(log), str(runs_for)]
    (tmp_path / "alice.toml").write_text(
        f'[wake]\nmode = "command"\ncommand = {json.dumps(command)}\nwindow = 0.2\ntimeout = 8\n'
    )  # (8 s: the two commands it runs take well under 2 s, even with both cores busy)
    w = WatchProcess(env, tmp_path)
    try:
        w.wait_for("connected")
        msg = hub.post(bob, {"to": "alice", "payload": {"text": "what is 6 x 7?"}}).json()["id"]
        w.wait_for("woke" if runs_for == 0 else "wake_failed")
        lines = log.read_text().splitlines()
        assert len(lines) == 1 and lines[0].split(" ", 3)[:3] == [msg, "0", "0"], (lines, w.events()[-3:])
        assert run_json("show", msg, env=env)["state"] == "done", "finished by the agent, not restored"
        answers = run_json("check", env=bob_env)["messages"]
        assert [(m["text"], m["reply_to"]) for m in answers] == [("the answer", msg)]
        assert run_json("check", env=env)["messages"] == [], "nothing comes back to be answered again"
    finally:
        w.stop()
