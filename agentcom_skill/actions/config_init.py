"""`agentcom config init`: write a config file, with a token from the hub when asked to register."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import ENV_VARS, check_agent_id, check_hub_url, default_config_path
from ..config_write import keep_previous, write_config_file
from ..errors import ConfigError


def token_way_out(agent_id: str, give_it: str) -> str:
    """What to do when the hub knows this id but we hold no working token for it: a hub gives a
    token once, at registration, so another comes from whoever runs the hub. `give_it` says
    where the token goes."""
    return (
        f"{give_it}, with the token {agent_id} was given or one from the hub's operator; for a local hub"
        f" (`agentcom hub serve`), `agentcom hub token {agent_id} --db HUB.DB > FILE` mints one"
    )


def init_config(
    overrides: Mapping[str, Any],
    *,
    register: bool = False,
    capabilities: str | None = None,
    ignore_from: str | None = None,
    status: str | None = None,
    force: bool = False,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write a config file from the given settings; with `register`, get a token from the hub
    first. With `force` over an existing file, its other settings are kept: the result names
    the file, the settings kept from the old one and those dropped."""
    env = os.environ if env is None else env
    path = overrides.get("config") or env.get(ENV_VARS["config"]) or default_config_path()
    values: dict[str, Any] = {
        "hub_url": overrides.get("hub_url") or env.get(ENV_VARS["hub_url"]),
        "agent_id": overrides.get("agent_id") or env.get(ENV_VARS["agent_id"]),
    }
    for name in ("hub_url", "agent_id"):
        if not values[name]:
            raise ConfigError(f"{name} is needed: pass --{name.replace('_', '-')} or set {ENV_VARS[name]}")
    values["hub_url"] = check_hub_url(str(values["hub_url"]), "--hub-url")
    values["agent_id"] = check_agent_id(str(values["agent_id"]), "--agent-id")
    if Path(path).expanduser().exists() and not force:
        raise ConfigError(f"config file {path} already exists (use --force to overwrite it)")
    if register:
        from ..client import HubClient

        with HubClient(values["hub_url"], None) as hub:
            try:
                values["token"] = hub.register(values["agent_id"])["token"]
            except ConfigError as exc:  # the hub's 409: the id is taken, and the hub never gives its token twice
                give_it = "write the config with `agentcom config init ... --token-file FILE` instead of --register"
                raise ConfigError(f"{exc}; {token_way_out(values['agent_id'], give_it)}") from None
    elif overrides.get("token_file") or env.get(ENV_VARS["token_file"]):
        values["token_file"] = os.path.abspath(overrides.get("token_file") or env[ENV_VARS["token_file"]])
    state_dir = overrides.get("state_dir") or env.get(ENV_VARS["state_dir"])
    if state_dir:
        values["state_dir"] = os.path.abspath(os.path.expanduser(str(state_dir)))
    if capabilities is not None:
        values["capabilities"] = [c.strip() for c in capabilities.split(",") if c.strip()]
    if ignore_from is not None:
        values["ignore_from"] = [c.strip() for c in ignore_from.split(",") if c.strip()]
    if status is not None:
        values["status"] = status
    kept: list[str] = []
    dropped: list[str] = []
    if force and Path(path).expanduser().exists():  # keep what the new values do not replace
        values, kept, dropped = keep_previous(Path(path).expanduser(), values)
    write_config_file(Path(path).expanduser(), values, force=force)
    return {"path": str(path), "kept": kept, "dropped": dropped}
