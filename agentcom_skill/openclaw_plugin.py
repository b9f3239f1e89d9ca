"""The OpenClaw channel plugin that ships inside this package (the `openclaw/` folder beside
this file): install it into the `openclaw` found on PATH, write its `channels.agentcom` block
from agentcom's own settings, undo both, and say how it stands (for `doctor`).

Everything goes through OpenClaw's own command line (`openclaw plugins install --link`,
`openclaw config set|unset|validate`), so OpenClaw validates what is written (`config set`
and `unset` check the whole config before writing; after anything else, `config validate`); the current
state is read from its config file (`openclaw config file`), or, when that file is not plain
JSON, with `openclaw config get`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import ConfigError

PLUGIN_ID = "agentcom"
PLUGIN_DIR = Path(__file__).resolve().parent / "openclaw"
OPENCLAW_TIMEOUT = 180.0
RESTART_HINT = "restart the gateway (`openclaw gateway restart`, or stop and start `openclaw gateway run`)"


def find_openclaw(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    program = shutil.which("openclaw", path=env.get("PATH"))
    if program is None:
        raise ConfigError("openclaw is not on PATH: install OpenClaw first (https://docs.openclaw.ai), then run again")
    return program


def agentcom_executable() -> str:
    """The `agentcom` that the gateway will run: the one beside this Python (the same install
    as the code running now), else the one on PATH."""
    beside = Path(sys.executable).parent / "agentcom"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("agentcom")
    if found is None:
        raise ConfigError("cannot find the agentcom executable (not beside this Python, not on PATH)")
    return str(Path(found).resolve())


def channel_block(settings: Settings) -> dict[str, Any]:
    """`channels.agentcom`: where the watch finds the user's settings. The token itself is never
    copied into OpenClaw's config: it stays in the user's token file or agentcom config file."""
    block: dict[str, Any] = {
        "enabled": True,
        "command": agentcom_executable(),
        "config": str(settings.config_path.expanduser().resolve()),
        "hubUrl": settings.hub_url,
        "agentId": settings.agent_id,
        "stateDir": str(settings.state_dir.expanduser().resolve()),
    }
    source = settings.sources.get("token", "")
    if source.startswith("token file "):
        block["tokenFile"] = str(Path(source[len("token file ") :]).resolve())
    elif not source.startswith("config file"):
        raise ConfigError(
            f"the token comes from {source or 'nowhere the gateway can read'}, which the OpenClaw gateway does "
            "not see: keep it in a file (token_file in the config, or `agentcom config init --register`)"
        )
    return block


class OpenClaw:
    """The `openclaw` command line, one call at a time, bounded; never echoes a token."""

    def __init__(self, program: str, env: Mapping[str, str] | None = None):
        self.program = program
        self.env = {**(os.environ if env is None else env), "OPENCLAW_NO_PROMPT": "1"}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        try:
            out = subprocess.run(
                [self.program, *args], capture_output=True, text=True, timeout=OPENCLAW_TIMEOUT, env=self.env
            )
        except subprocess.TimeoutExpired:
            raise ConfigError(f"`openclaw {' '.join(args[:3])}` took over {OPENCLAW_TIMEOUT:g} s") from None
        except OSError as exc:
            raise ConfigError(f"cannot run {self.program}: {exc.strerror}") from None
        if check and out.returncode != 0:
            raise ConfigError(f"`openclaw {' '.join(args[:3])}` failed: {last_line(out)}")
        return out

    def config_path(self) -> Path:
        """OpenClaw's config file, as its docs say it is found (help/environment.md); with a
        profile, `openclaw config file` says (a second or more: most runs need not ask)."""
        env = self.env
        if env.get("OPENCLAW_CONFIG_PATH", "").strip():
            return Path(env["OPENCLAW_CONFIG_PATH"]).expanduser()
        if not env.get("OPENCLAW_PROFILE", "").strip():
            state = env.get("OPENCLAW_STATE_DIR", "").strip()
            home = env.get("OPENCLAW_HOME", "").strip() or env.get("HOME", "").strip() or str(Path.home())
            return (
                Path(state).expanduser() / "openclaw.json"
                if state
                else Path(home).expanduser() / ".openclaw" / "openclaw.json"
            )
        return Path(self.run("config", "file").stdout.strip().splitlines()[-1])

    def config(self) -> dict[str, Any]:
        """The plugin's entry, load paths and channel block as OpenClaw's config holds them."""
        try:
            data = json.loads(self.config_path().read_text())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError):  # JSON5 with comments: ask OpenClaw, path by path
            data = {
                "plugins": self._get("plugins") or {},
                "channels": {PLUGIN_ID: self._get(f"channels.{PLUGIN_ID}")},
            }
        plugins = data.get("plugins") or {}
        return {
            "entry": (plugins.get("entries") or {}).get(PLUGIN_ID),
            "paths": list((plugins.get("load") or {}).get("paths") or []),
            "channel": (data.get("channels") or {}).get(PLUGIN_ID),
        }

    def _get(self, dotted: str) -> Any:
        out = self.run("config", "get", dotted, "--json", check=False)
        try:
            return json.loads(out.stdout) if out.returncode == 0 else None
        except ValueError:
            return None

    def validate(self) -> None:
        out = self.run("config", "validate", check=False)
        if out.returncode != 0:
            raise ConfigError(f"`openclaw config validate` fails: {last_line(out)}")


def last_line(out: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (out.stderr + "\n" + out.stdout).splitlines() if line.strip()]
    return (lines[-1] if lines else f"exit code {out.returncode}")[:300]


def installed(state: Mapping[str, Any]) -> bool:
    entry = state.get("entry")
    return bool(isinstance(entry, dict) and entry.get("enabled") and str(PLUGIN_DIR) in state.get("paths", []))


def install(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Install the plugin and write its channel block; what changed (nothing when already so)."""
    oc = OpenClaw(find_openclaw(env), env)
    block = channel_block(settings)
    state = oc.config()
    changed = []
    validated = True  # `openclaw config set|unset` validate the whole config before they write
    if not installed(state):
        oc.run("plugins", "install", "--link", str(PLUGIN_DIR), "--force", "--accept-capabilities")
        changed.append(f"installed the AgentCom channel plugin (linked {PLUGIN_DIR})")
        validated = False
    if state.get("channel") != block:
        oc.run("config", "set", f"channels.{PLUGIN_ID}", json.dumps(block), "--strict-json")
        what = "replaced" if state.get("channel") else "wrote"
        changed.append(
            f"{what} channels.{PLUGIN_ID}: agent {block['agentId']} at {block['hubUrl']}, "
            f"settings from {block['config']}, watch run as {block['command']}"
        )
        validated = True
    if not validated:
        oc.validate()
    return {
        "openclaw": oc.program,
        "plugin_dir": str(PLUGIN_DIR),
        "channel": block,
        "changed": changed,
        "next": RESTART_HINT if changed else None,
    }


def uninstall(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Remove the channel block, then the plugin (in that order: the block is valid only while
    the plugin is there); what changed."""
    oc = OpenClaw(find_openclaw(env), env)
    state = oc.config()
    changed = []
    if state.get("channel") is not None:
        oc.run("config", "unset", f"channels.{PLUGIN_ID}")
        changed.append(f"removed channels.{PLUGIN_ID}")
    entry = state.get("entry")
    validated = True
    if str(PLUGIN_DIR) in state.get("paths", []) or (isinstance(entry, dict) and entry.get("enabled")):
        # --keep-files: the linked folder is this package's own; OpenClaw must not delete it
        oc.run("plugins", "uninstall", PLUGIN_ID, "--force", "--keep-files")
        changed.append("uninstalled the AgentCom channel plugin")
        entry = oc.config().get("entry")
        validated = False
    if entry is not None:  # OpenClaw leaves the entry behind, disabled: install wrote it, so it goes
        oc.run("config", "unset", f"plugins.entries.{PLUGIN_ID}")
        changed.append(f"removed plugins.entries.{PLUGIN_ID}")
        validated = True
    if not validated:
        oc.validate()
    return {"openclaw": oc.program, "changed": changed, "next": RESTART_HINT if changed else None}


def describe(state: Mapping[str, Any], settings: Settings | None) -> tuple[str, str]:
    """For `doctor`: (outcome, detail) of the plugin as OpenClaw's config holds it:
    "absent", "ok", or "stale" (installed, but its block no longer matches these settings)."""
    channel = state.get("channel")
    if not installed(state) and channel is None:
        return "absent", "the AgentCom channel plugin is not installed"
    if not installed(state) or not isinstance(channel, dict):
        return "stale", "the AgentCom channel plugin is half installed"
    if settings is not None:
        expected = {"hubUrl": settings.hub_url, "agentId": settings.agent_id}
        differs = [k for k, v in expected.items() if channel.get(k) != v]
        if differs:
            return "stale", f"channels.{PLUGIN_ID} names another {' and '.join(differs)} than these settings"
    if not Path(str(channel.get("command"))).exists():
        return "stale", f"channels.{PLUGIN_ID} runs {str(channel.get('command'))[:120]}, which does not exist"
    return "ok", f"the AgentCom channel plugin is installed (agent {channel.get('agentId')}, watch run by the gateway)"


__all__ = ["install", "uninstall", "describe", "channel_block", "OpenClaw", "PLUGIN_DIR", "find_openclaw"]
