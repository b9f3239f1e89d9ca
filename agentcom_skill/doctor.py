"""`agentcom doctor`: check, in order, everything a working setup needs, one finding each.

Each check returns a `Finding` (ok, warn, fail or skip) with one line of detail and, when it
is not ok, what to do. A failure stops the checks that depend on it (no hub: no token check).
The exit code is that of the first failure (errors.py's codes), 0 when everything needed
holds; warnings do not fail. Nothing here prints a token: details come from our own error
messages, which never carry one.

Imported only by the `doctor` command (it pulls requests and may run `openclaw`).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import requests

from .actions.common import forget_unused_state, hub_client, open_store
from .actions.config_init import token_way_out
from .actions.hazards import watch_warnings
from .config import Settings, load_settings
from .errors import AgentComError, AuthError, ConfigError, HubUnavailableError, StateError
from .render import ago
from .transport import describe_proxy, environment_proxy
from .watchstate import read_status

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
PROBE_TIMEOUT = 10.0
OPENCLAW_TIMEOUT = 120.0


class Finding(NamedTuple):
    check: str
    outcome: str  # ok | warn | fail | skip
    detail: str
    fix: str = ""
    exit_code: int = 0


def run_doctor(overrides: Mapping[str, Any], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every check in order; the result `agentcom doctor --json` prints."""
    findings: list[Finding] = []
    settings = _config(overrides, env, findings)
    if settings is None:
        findings += [
            Finding(c, SKIP, "needs a working configuration") for c in ("hub", "token", "store", "watch", "wake")
        ]
    else:
        made_here = not settings.agent_state_dir().exists()
        hub_ok = _hub(settings, findings)
        if hub_ok:
            _token(settings, findings)
        else:
            findings.append(Finding("token", SKIP, "needs the hub"))
        _store(settings, findings)
        _watch(settings, findings)
        _wake(settings, findings)
        if made_here and any(f.outcome == FAIL for f in findings if f.check in ("hub", "token")):
            forget_unused_state(settings.agent_state_dir())  # no folder for a hub or id that may be a typo
    plugin = _openclaw_plugin(settings, findings)
    _openclaw(findings, plugin_installed=plugin)
    failed = [f for f in findings if f.outcome == FAIL]
    return {"checks": [f._asdict() for f in findings], "exit_code": failed[0].exit_code if failed else 0}


def _config(overrides: Mapping[str, Any], env: Mapping[str, str] | None, findings: list[Finding]) -> Settings | None:
    try:
        settings = load_settings(overrides, env=env)
    except ConfigError as exc:
        findings.append(Finding("config", FAIL, str(exc), "fix the setting named above", exc.exit_code))
        return None
    path = settings.config_path
    sources = ", ".join(
        sorted({f"{k} from {v}" for k, v in settings.sources.items() if k in ("hub_url", "agent_id", "token")})
    )
    if not path.exists():
        findings.append(Finding("config", OK, f"no config file at {path}; {sources}"))
        return settings
    mode = stat.S_IMODE(path.stat().st_mode)
    holds_token = "config file" in settings.sources.get("token", "")
    if holds_token and mode & 0o077:
        findings.append(
            Finding(
                "config", WARN, f"{path} holds the token and is readable by others (mode {mode:o})", f"chmod 600 {path}"
            )
        )
    else:
        findings.append(Finding("config", OK, f"{path} (mode {mode:o}); {sources}"))
    return settings


def _hub(settings: Settings, findings: list[Finding]) -> bool:
    via = describe_proxy(settings.hub_url) if environment_proxy(settings.hub_url) else None
    started = time.monotonic()
    try:
        with hub_client(settings) as hub:
            health = hub.health()
    except AgentComError as exc:
        fix = "start the hub, or correct hub_url" + (f" or the proxy setting ({via})" if via else "")
        findings.append(Finding("hub", FAIL, str(exc), fix, exc.exit_code))
        return False
    ms = (time.monotonic() - started) * 1000
    where = f"{settings.hub_url} answered in {ms:.0f} ms" + (f" through the proxy {via}" if via else "")
    if health.get("status") != "ok":
        findings.append(
            Finding(
                "hub",
                FAIL,
                f"{where}, but its health is {str(health.get('status'))[:40]!r}",
                "look at the hub's own logs",
                HubUnavailableError.exit_code,
            )
        )
        return False
    findings.append(
        Finding("hub", OK, f"{where}: healthy, {health.get('agents_connected')} agent(s) connected by WebSocket")
    )
    return True


def _token(settings: Settings, findings: list[Finding]) -> None:
    try:
        with hub_client(settings) as hub:
            waiting = len(hub.poll(settings.agent_id, 0).messages)
    except AuthError as exc:
        findings.append(
            Finding(
                "token",
                FAIL,
                str(exc),
                token_way_out(
                    settings.agent_id, f"give its token with --token-file FILE or token_file in {settings.config_path}"
                ),
                exc.exit_code,
            )
        )
        return
    except AgentComError as exc:
        findings.append(Finding("token", FAIL, str(exc), "see the hub check above", exc.exit_code))
        return
    source = settings.sources.get("token", "the settings")
    findings.append(
        Finding("token", OK, f"accepted for {settings.agent_id} (from {source}); {waiting} message(s) at the hub")
    )


def _store(settings: Settings, findings: list[Finding]) -> None:
    directory = settings.agent_state_dir()
    try:
        with open_store(settings) as store:
            with store.write():  # can it be written now (read-only folder, full disk, a lock held)?
                pass
            health = store.quick_check()
            counts = store.counts(time.time())
            warnings = store.take_warnings()
    except StateError as exc:
        findings.append(
            Finding("store", FAIL, str(exc), f"make {directory} writable by you (and only you)", exc.exit_code)
        )
        return
    except AgentComError as exc:
        findings.append(Finding("store", FAIL, str(exc), "try again when the other run has finished", exc.exit_code))
        return
    if health != "ok":
        findings.append(
            Finding(
                "store",
                FAIL,
                f"{directory}: the database reports {str(health)[:80]!r}",
                "move messages.sqlite3 aside; the next check rebuilds it from the hub",
                StateError.exit_code,
            )
        )
        return
    detail = f"{directory}: {counts['stored']} message(s) kept, {counts['open']} open, {counts['dead']} dead letter(s)"
    if warnings:
        findings.append(Finding("store", WARN, f"{detail}; {warnings[0]}", "see the warning"))
    else:
        findings.append(Finding("store", OK, detail))


def _watch(settings: Settings, findings: list[Finding]) -> None:
    status = read_status(settings.agent_state_dir())
    if status is None:
        findings.append(Finding("watch", OK, "no watch running (check polls the hub)"))
        return
    pid = status.get("pid", "?")
    if not status.get("connected_since"):
        findings.append(
            Finding(
                "watch",
                WARN,
                f"running (pid {pid}) but not connected; last event: {status.get('last_event')}",
                "check the hub check above and the watch's log; meanwhile `check` polls the hub itself",
            )
        )
        return
    problems = watch_warnings(status)  # connected: its hazards and a last wake error not yet cleared
    detail = f"running (pid {pid}), connected {ago(status['connected_since'])}"
    if problems:
        findings.append(Finding("watch", WARN, f"{detail}; {problems[0]}", "see `agentcom status`"))
    else:
        findings.append(Finding("watch", OK, detail))


def _wake(settings: Settings, findings: list[Finding]) -> None:
    wake = settings.wake
    if not wake.configured:
        findings.append(Finding("wake", SKIP, "no [wake] configured: messages wait for `agentcom check`"))
        return
    if wake.mode == "command":
        program = wake.command[0] if wake.command else ""
        if getattr(wake, "shell", False) or shutil.which(program):
            findings.append(Finding("wake", OK, f"command mode: {program[:60]} found"))
        else:
            findings.append(
                Finding(
                    "wake",
                    FAIL,
                    f"command mode: {program[:60]!r} is not on PATH",
                    "give the full path in [wake] command",
                    ConfigError.exit_code,
                )
            )
        return
    probe: Callable[[Any], Finding] = _probe_a2a if wake.mode == "a2a" else _probe_hooks
    finding = probe(wake)
    watch = read_status(settings.agent_state_dir()) or {}
    error = watch.get("last_wake_error")
    if finding.outcome == OK and isinstance(error, Mapping) and not error.get("cleared_at"):
        # The probe proves the token and the route now, not the wake that failed: both are said.
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(error.get("at") or 0)))
        finding = finding._replace(
            outcome=WARN,
            detail=f"{finding.detail} now; but the watch's last wake failed ({when}): {error.get('detail')}",
            fix=f"`kill -HUP {watch.get('pid', 'PID')}` has the watch try again at once; "
            "it clears when a wake goes through",
        )
    findings.append(finding)


def _probe_hooks(wake: Any) -> Finding:
    """POST /hooks/wake with an empty body: the gateway checks the token first (401), then
    refuses the body (400), so nothing wakes."""
    try:
        reply = requests.post(
            f"{wake.url}/hooks/wake",
            json={},
            timeout=PROBE_TIMEOUT,
            headers={"authorization": f"Bearer {wake.token}"} if wake.token else {},
        )
    except requests.RequestException as exc:
        return Finding(
            "wake",
            FAIL,
            f"gateway {wake.url} unreachable ({type(exc).__name__})",
            "start the OpenClaw gateway, or correct [wake] url",
            HubUnavailableError.exit_code,
        )
    return _judge(wake, reply.status_code, "hooks", reply.status_code == 400)


def _probe_a2a(wake: Any) -> Finding:
    """The agent card, then a GetTask for a task nobody has: answered with a JSON-RPC error
    when the token is accepted (HTTP 401 when not); no message is sent."""
    base = wake.url.rsplit("/a2a", 1)[0]
    try:
        card = requests.get(f"{base}/.well-known/agent-card.json", timeout=PROBE_TIMEOUT)
        reply = requests.post(
            wake.url,
            timeout=PROBE_TIMEOUT,
            json={"jsonrpc": "2.0", "id": "doctor", "method": "GetTask", "params": {"id": "agentcom-doctor"}},
            headers={"authorization": f"Bearer {wake.token}"} if wake.token else {},
        )
    except requests.RequestException as exc:
        return Finding(
            "wake",
            FAIL,
            f"A2A endpoint {wake.url} unreachable ({type(exc).__name__})",
            "start the gateway (its A2A channel answers 40-55 s after start), or correct [wake] url",
            HubUnavailableError.exit_code,
        )
    try:
        answered = reply.status_code == 200 and "jsonrpc" in json.loads(reply.content)
    except ValueError:
        answered = False
    finding = _judge(wake, reply.status_code, "a2a", answered)
    if finding.outcome == OK and card.status_code != 200:
        return finding._replace(outcome=WARN, detail=f"{finding.detail}; but no agent card ({card.status_code})")
    return finding


def _judge(wake: Any, status: int, mode: str, accepted: bool) -> Finding:
    if status in (401, 403):
        return Finding(
            "wake",
            FAIL,
            f"{mode} mode: the gateway {wake.url} refused the wake token ({status})",
            "set [wake] token_file to the token the gateway's config holds",
            AuthError.exit_code,
        )
    if not accepted:
        return Finding(
            "wake",
            FAIL,
            f"{mode} mode: the gateway {wake.url} answered {status}",
            "check [wake] url and that the gateway has this feature enabled",
            ConfigError.exit_code,
        )
    return Finding("wake", OK, f"{mode} mode: the gateway {wake.url} accepts the wake token")


def _openclaw_plugin(settings: Settings | None, findings: list[Finding]) -> bool:
    """The AgentCom channel plugin as OpenClaw's config holds it; True when installed."""
    if shutil.which("openclaw") is None:
        return False
    from .openclaw_plugin import OpenClaw, describe, find_openclaw

    try:
        outcome, detail = describe(OpenClaw(find_openclaw()).config(), settings)
    except AgentComError as exc:
        findings.append(Finding("openclaw plugin", WARN, f"cannot read OpenClaw's config: {exc}"))
        return False
    if outcome == "absent":
        findings.append(Finding("openclaw plugin", SKIP, f"{detail} (`agentcom openclaw install` adds it)"))
        return False
    if outcome == "stale":
        findings.append(Finding("openclaw plugin", WARN, detail, "run `agentcom openclaw install` again"))
        return True
    findings.append(Finding("openclaw plugin", OK, detail))
    return True


def _openclaw(findings: list[Finding], plugin_installed: bool = False) -> None:
    program = shutil.which("openclaw")
    if program is None:
        findings.append(Finding("openclaw", SKIP, "no openclaw on PATH"))
        return
    try:
        out = subprocess.run(
            [program, "skills", "info", "agentcom", "--json"],
            capture_output=True,
            text=True,
            timeout=OPENCLAW_TIMEOUT,
            env={**os.environ, "OPENCLAW_NO_PROMPT": "1"},
        )
        info = json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        findings.append(
            Finding(
                "openclaw",
                FAIL,
                "`openclaw skills info agentcom` gave no answer",
                "install SKILL.md as ~/.openclaw/workspace/skills/agentcom/SKILL.md",
                ConfigError.exit_code,
            )
        )
        return
    if info.get("eligible") and info.get("modelVisible", True):
        findings.append(Finding("openclaw", OK, f"the agentcom skill is visible to the model ({Path(program).name})"))
        return
    missing = json.dumps(info.get("missing") or {}, separators=(",", ":"))[:200]
    if plugin_installed:  # the channel plugin hands messages over itself; the skill is optional then
        findings.append(
            Finding(
                "openclaw",
                WARN,
                f"the agentcom skill is not visible to the model (missing: {missing}); the channel plugin works without"
                " it, but the model cannot run `agentcom` commands",
                "see the README's OpenClaw section",
            )
        )
        return
    findings.append(
        Finding(
            "openclaw",
            FAIL,
            f"the agentcom skill is not visible to the model (missing: {missing})",
            "see the README's OpenClaw section",
            ConfigError.exit_code,
        )
    )
