"""The OpenClaw plugin's Python side without OpenClaw: the channel block written from the
user's settings (never the token), where OpenClaw's config file is, and how `doctor` judges
what OpenClaw's config holds. The plugin itself runs for real in test_openclaw.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentcom_skill.config import load_settings
from agentcom_skill.errors import ConfigError
from agentcom_skill.openclaw_plugin import PLUGIN_DIR, OpenClaw, channel_block, describe

TOKEN = "t" * 40


def settings(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    config = tmp_path / "agentcom.toml"
    config.write_text(text)
    base = {"AGENTCOM_CONFIG": str(config), "AGENTCOM_STATE_DIR": str(tmp_path / "state")}
    return load_settings(env={**base, **(env or {})})


def test_the_block_names_where_the_settings_are_and_never_holds_the_token(tmp_path):
    inline = settings(tmp_path, f'hub_url = "http://hub:4000"\nagent_id = "gcu"\ntoken = "{TOKEN}"\n')
    block = channel_block(inline)
    assert block["config"] == str((tmp_path / "agentcom.toml").resolve()) and "tokenFile" not in block
    assert (block["hubUrl"], block["agentId"], block["enabled"]) == ("http://hub:4000", "gcu", True)
    assert block["stateDir"] == str((tmp_path / "state").resolve()) and Path(block["command"]).name == "agentcom"
    assert TOKEN not in repr(block)
    (tmp_path / "token").write_text(TOKEN)
    token_file = tmp_path / "token"
    in_file = settings(tmp_path, f'hub_url = "http://hub:4000"\nagent_id = "gcu"\ntoken_file = "{token_file}"\n')
    assert channel_block(in_file)["tokenFile"] == str((tmp_path / "token").resolve())


def test_a_token_only_in_the_environment_is_refused_the_gateway_would_not_see_it(tmp_path):
    only_env = settings(tmp_path, 'hub_url = "http://hub:4000"\nagent_id = "gcu"\n', {"AGENTCOM_TOKEN": TOKEN})
    with pytest.raises(ConfigError) as err:
        channel_block(only_env)
    assert "keep it in a file" in str(err.value) and TOKEN not in str(err.value)


def test_openclaws_config_file_is_found_as_its_docs_say(tmp_path):
    def path(**env: str) -> Path:
        return OpenClaw("/bin/false", env).config_path()

    assert path(HOME="/h") == Path("/h/.openclaw/openclaw.json")
    assert path(HOME="/h", OPENCLAW_HOME="/o") == Path("/o/.openclaw/openclaw.json")
    assert path(HOME="/h", OPENCLAW_STATE_DIR="/s") == Path("/s/openclaw.json")
    assert path(HOME="/h", OPENCLAW_STATE_DIR="/s", OPENCLAW_CONFIG_PATH="/c.json") == Path("/c.json")


def test_doctor_says_absent_ok_or_stale(tmp_path):
    s = settings(tmp_path, f'hub_url = "http://hub:4000"\nagent_id = "gcu"\ntoken = "{TOKEN}"\n')
    block = channel_block(s)
    installed = {"entry": {"enabled": True}, "paths": [str(PLUGIN_DIR)], "channel": block}
    assert describe({"entry": None, "paths": [], "channel": None}, s)[0] == "absent"
    assert describe(installed, s)[0] == "ok"
    assert describe({**installed, "channel": None}, s)[0] == "stale"
    assert describe({**installed, "entry": {"enabled": False}}, s)[0] == "stale"
    other = settings(tmp_path, f'hub_url = "http://hub:4000"\nagent_id = "mind"\ntoken = "{TOKEN}"\n')
    assert describe(installed, other) == ("stale", "channels.agentcom names another agentId than these settings")
    gone = {**installed, "channel": {**block, "command": str(tmp_path / "no-such-agentcom")}}
    assert describe(gone, s)[0] == "stale"


def test_every_plugin_file_is_package_data_of_the_wheel_and_in_the_sdist():
    import fnmatch
    import tomllib

    root = PLUGIN_DIR.parent.parent
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    files = [f"openclaw/{p.name}" for p in PLUGIN_DIR.iterdir() if p.is_file()]
    assert {"openclaw/index.js", "openclaw/openclaw.plugin.json", "openclaw/package.json"} <= set(files)
    assert all(any(fnmatch.fnmatch(f, pat) for pat in patterns["agentcom_skill"]) for f in files)
    assert "recursive-include agentcom_skill/openclaw *.js *.json" in (root / "MANIFEST.in").read_text()


def test_the_plugin_carries_the_packages_version_and_one_id_everywhere():
    import json

    import agentcom_skill

    package = json.loads((PLUGIN_DIR / "package.json").read_text())
    manifest = json.loads((PLUGIN_DIR / "openclaw.plugin.json").read_text())
    assert package["version"] == agentcom_skill.__version__
    assert manifest["id"] == package["name"] == package["openclaw"]["channel"]["id"] == "agentcom"
    assert manifest["channels"] == ["agentcom"] and "agentcom" in manifest["channelConfigs"]
