"""`agentcom doctor` against real processes: each check's failure gives its exit code and says
what to do, the first failure decides the exit code, and no token is ever printed."""

from __future__ import annotations

import json

from conftest import agent_env, free_port, run_cli
from gateway import RecordingGateway


def checks(out) -> dict[str, dict]:
    return {c["check"]: c for c in json.loads(out.stdout)["checks"]}


def test_a_working_setup_is_exit_0_and_no_token_is_printed(hub, tmp_path):
    alice = hub.mint("alice")
    env = agent_env(hub, "alice", alice, tmp_path)
    out = run_cli("doctor", "--json", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    found = checks(out)
    assert [found[c]["outcome"] for c in ("config", "hub", "token", "store", "watch")] == ["ok"] * 5
    assert found["wake"]["outcome"] == "skip"
    text = run_cli("doctor", env=env)
    assert text.returncode == 0 and "everything needed works" in text.stdout
    assert alice not in out.stdout + out.stderr + text.stdout + text.stderr


def test_the_first_failure_gives_the_exit_code_and_skips_what_depends_on_it(hub, tmp_path):
    alice = hub.mint("alice")
    env = agent_env(hub, "alice", alice, tmp_path)
    no_config = run_cli("doctor", "--json", env={k: v for k, v in env.items() if k != "AGENTCOM_HUB_URL"})
    assert no_config.returncode == 2 and checks(no_config)["config"]["outcome"] == "fail"
    down = run_cli("doctor", "--json", env={**env, "AGENTCOM_HUB_URL": f"http://127.0.0.1:{free_port()}"})
    found = checks(down)
    assert down.returncode == 4 and found["hub"]["outcome"] == "fail" and found["token"]["outcome"] == "skip"
    assert found["store"]["outcome"] == "ok", "the local checks still run"
    refused = run_cli("doctor", env={**env, "AGENTCOM_TOKEN": "e" * 64})
    assert (
        refused.returncode == 3 and "FAIL  token:" in refused.stdout and "e" * 64 not in refused.stdout + refused.stderr
    )
    fix = checks(run_cli("doctor", "--json", env={**env, "AGENTCOM_TOKEN": "e" * 64}))["token"]["fix"]
    assert "--token-file" in fix and "agentcom hub token alice --db" in fix, "the way out is named"
    assert "Traceback" not in down.stderr + refused.stderr


def test_store_and_config_problems(hub, tmp_path):
    alice = hub.mint("alice")
    env = agent_env(hub, "alice", alice, tmp_path)
    config = tmp_path / "alice.toml"
    config.write_text(f'token = "{alice}"\n')
    config.chmod(0o644)
    env = {k: v for k, v in env.items() if k != "AGENTCOM_TOKEN"}
    loose = run_cli("doctor", "--json", env=env)
    assert (
        loose.returncode == 0
        and checks(loose)["config"]["outcome"] == "warn"
        and "chmod 600" in checks(loose)["config"]["fix"]
    )
    run_cli("check", env=env)
    (db,) = (tmp_path / "state").rglob("messages.sqlite3")
    db.rename(db.with_name("kept.sqlite3"))
    db.symlink_to(tmp_path / "elsewhere.sqlite3")  # an unusable store (root ignores file modes)
    stuck = run_cli("doctor", "--json", env=env)
    assert stuck.returncode == 6 and checks(stuck)["store"]["outcome"] == "fail", stuck.stdout
    assert "symbolic link" in checks(stuck)["store"]["detail"]


def test_the_wake_token_is_checked_without_waking_anyone(hub, tmp_path):
    alice = hub.mint("alice")
    env = agent_env(hub, "alice", alice, tmp_path)
    gateway = RecordingGateway()
    try:
        config = tmp_path / "alice.toml"
        config.write_text(f'[wake]\nurl = "{gateway.url}"\ntoken = "{gateway.token}"\n')
        good = run_cli("doctor", "--json", env=env)
        assert good.returncode == 0 and checks(good)["wake"]["outcome"] == "ok", good.stdout
        assert gateway.wakes == [], "the probe woke nobody"
        config.write_text(f'[wake]\nurl = "{gateway.url}"\ntoken = "{"w" * 40}"\n')
        bad = run_cli("doctor", "--json", env=env)
        assert bad.returncode == 3 and checks(bad)["wake"]["outcome"] == "fail"
        assert "w" * 40 not in bad.stdout + bad.stderr and gateway.token not in good.stdout
        config.write_text(f'[wake]\nurl = "http://127.0.0.1:{free_port()}"\ntoken = "{gateway.token}"\n')
        gone = run_cli("doctor", "--json", env=env)
        assert gone.returncode == 4 and "unreachable" in checks(gone)["wake"]["detail"]
    finally:
        gateway.close()


def test_the_hub_is_checked_through_the_proxy_the_client_would_use(hub, tmp_path):
    """Issue 18.5: "hub URL reachable (through the proxy if one is set)"; its password never shown."""
    from forwardproxy import ForwardProxy

    alice = hub.mint("alice")
    env = {k: v for k, v in agent_env(hub, "alice", alice, tmp_path).items() if not k.lower().endswith("_proxy")}
    proxy = ForwardProxy()
    try:
        with_proxy = {**env, "HTTP_PROXY": proxy.url.replace("http://", "http://user:s3cret@")}
        out = run_cli("doctor", "--json", env=with_proxy)
        assert out.returncode == 0, out.stdout
        assert "through the proxy" in checks(out)["hub"]["detail"] and "HTTP_PROXY" in checks(out)["hub"]["detail"]
        assert any(target.endswith("/health") for _, target in proxy.seen), "the hub was reached through it"
        assert "s3cret" not in out.stdout + out.stderr
    finally:
        proxy.close()
