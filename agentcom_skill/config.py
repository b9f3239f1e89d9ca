"""The one configuration loader: command-line options > environment > TOML config file.

Every setting is validated here, once; the rest of the code trusts `Settings`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar
from urllib.parse import urlsplit

from .errors import ConfigError

# Every environment variable the code reads (SKILL.md's requires.env is checked against it).
ENV_VARS = {
    "hub_url": "AGENTCOM_HUB_URL",
    "agent_id": "AGENTCOM_AGENT_ID",
    "token": "AGENTCOM_TOKEN",
    "token_file": "AGENTCOM_TOKEN_FILE",
    "config": "AGENTCOM_CONFIG",
    "state_dir": "AGENTCOM_STATE_DIR",
    "wake_token": "AGENTCOM_WAKE_TOKEN",
    "wake_mode": "AGENTCOM_WAKE_MODE",
    "wake_url": "AGENTCOM_WAKE_URL",
}

# Where a setting can be given on the command line, for error messages.
CLI_OPTIONS = {
    "hub_url": "--hub-url",
    "agent_id": "--agent-id",
    "token": "--token-file",
    "token_file": "--token-file",
    "state_dir": "--state-dir",
    "config": "--config",
}

_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}$")
TOKEN_PATTERN = re.compile(r"^[\x21-\x7e]{8,512}$")


WAKE_MODES = ("agent", "wake", "command", "a2a")
A2A_CONTEXTS = ("peer", "thread")


class SettingsRecord:
    """A read-only record built from its class's annotated fields, whose class attributes are
    the defaults. Not a dataclass: the code a dataclass generates costs about half a million
    instructions a field at import, and these two records load on every command."""

    _secret: ClassVar[frozenset[str]] = frozenset()  # left out of repr
    _uncompared: ClassVar[frozenset[str]] = frozenset()  # left out of == and hash

    def __init__(self, **values: Any) -> None:
        names = self.field_names()
        unknown = [n for n in values if n not in names]
        missing = [n for n in names if n not in values and not hasattr(type(self), n)]
        if unknown or missing:
            problem = f"no field {unknown[0]!r}" if unknown else f"needs {missing[0]!r}"
            raise TypeError(f"{type(self).__name__}: {problem}")
        self.__dict__.update(values)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(cls.__annotations__)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.field_names()}

    def replace(self, **changes: Any) -> Any:
        return type(self)(**{**self.as_dict(), **changes})

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def _compared(self) -> tuple[Any, ...]:
        return tuple(getattr(self, n) for n in self.field_names() if n not in self._uncompared)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SettingsRecord) and type(other) is type(self) and self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash(self._compared())

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.field_names() if n not in self._secret)
        return f"{type(self).__name__}({shown})"


class WakeSettings(SettingsRecord):
    """How `agentcom watch` wakes the agent (the config file's `[wake]` table)."""

    _secret = frozenset({"token"})

    mode: str = "agent"  # agent: POST /hooks/agent; wake: POST /hooks/wake; command: run `command`; a2a: A2A tasks
    url: str | None = None  # the OpenClaw gateway's base URL; for a2a, the JSON-RPC endpoint
    token: str | None = None
    session_key: str = "hook:agentcom"
    agent_id: str | None = None  # the gateway's agent (agentId); its default when None
    window: float = 2.0  # seconds to gather messages into one wake
    min_interval: float = 10.0  # seconds between two wakes
    max_batch: int = 20  # messages in one wake at most
    command: tuple[str, ...] = ()  # argv; with `shell`, one shell command line
    shell: bool = False  # run `command` through /bin/sh -c
    timeout: float = 30.0  # seconds for one wake request or command
    # a2a mode
    context: str = "peer"  # peer: one conversation per agent; thread: one per reply_to chain
    answer_budget: int = 6  # automatic answers per peer within answer_window (the loop guard)
    answer_window: float = 600.0
    requests_per_minute: int = 120  # A2A requests in any 60 s: a ceiling; the agent's refusals set the pace
    task_timeout: float = 900.0  # seconds a task may run before its messages go back to `check`
    max_tasks: int = 4  # tasks in flight at once (one per context)

    @property
    def configured(self) -> bool:
        return bool(self.command) if self.mode == "command" else bool(self.url)

    def argv(self) -> list[str]:
        """The wake command to run: the list as given, or the line through the shell."""
        return ["/bin/sh", "-c", self.command[0]] if self.shell else list(self.command)


class Settings(SettingsRecord):
    """Effective settings of one agent at one hub."""

    _secret = frozenset({"token", "sources"})
    _uncompared = frozenset({"sources"})

    hub_url: str
    agent_id: str
    token: str
    state_dir: Path
    config_path: Path
    capabilities: tuple[str, ...] = ()
    ignore_from: tuple[str, ...] = ()
    allow_from: tuple[str, ...] = ()
    status: str = "online"
    lease_seconds: float = 300.0
    auto_reply_limit: int = 30
    max_deliveries: int = 5
    mailbox_cap: int = 100
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_response_bytes: int = 64 * 1024 * 1024
    request_deadline: float = 60.0
    ca_bundle: str | None = (
        None  # CA certificates for an https hub (a self-signed one); None: REQUESTS_CA_BUNDLE or certifi
    )
    lock_timeout: float = 10.0
    prompt_text_limit: int = 1500
    retention_days: float = 30.0
    retention_max: int = 50_000
    check_max: int = 50  # messages one `check` returns when no --limit is given; the rest stay pending
    open_max_days: float = 30.0  # a message pending this long, never returned to the agent, is dead-lettered
    watch_ping_interval: float = 30.0
    watch_pong_timeout: float = 10.0
    watch_sweep_interval: float = 300.0
    wake: WakeSettings = WakeSettings()
    sources: Mapping[str, str] = MappingProxyType({})  # setting -> where it came from

    def agent_state_dir(self) -> Path:
        """One folder per (hub URL, agent id): two hubs never share a cursor."""
        parts = urlsplit(self.hub_url)
        host = re.sub(r"[^A-Za-z0-9.-]", "_", parts.netloc or "hub")
        digest = hashlib.sha256(f"{self.hub_url}\0{self.agent_id}".encode()).hexdigest()[:10]
        # Plain characters only, cut at 128 (an id of many-code-point characters would exceed a
        # file name's 255 bytes; every id of the older ASCII-only grammar keeps its folder).
        agent = re.sub(r"[^A-Za-z0-9._-]", "_", self.agent_id)[:128]
        return self.state_dir / f"{agent}@{host}-{digest}"

    def public(self) -> dict[str, Any]:
        """Settings as plain data with the token masked, for `config show` and `status`."""
        out: dict[str, Any] = {}
        for name in self.field_names():
            if name == "sources":
                continue
            value = getattr(self, name)
            if name == "token":
                value = mask_token(value)
            elif name == "wake":
                value = {
                    k: (mask_token(v) if k == "token" else list(v) if isinstance(v, tuple) else v)
                    for k, v in value.as_dict().items()
                }
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


# Settings a config file may hold, with their types.
FILE_KEYS: dict[str, type | tuple[type, ...]] = {
    "hub_url": str,
    "agent_id": str,
    "token": str,
    "token_file": str,
    "capabilities": list,
    "ignore_from": list,
    "allow_from": list,
    "status": str,
    "lease_seconds": (int, float),
    "auto_reply_limit": int,
    "max_deliveries": int,
    "mailbox_cap": int,
    "connect_timeout": (int, float),
    "read_timeout": (int, float),
    "max_response_bytes": int,
    "request_deadline": (int, float),
    "ca_bundle": str,
    "lock_timeout": (int, float),
    "prompt_text_limit": int,
    "retention_days": (int, float),
    "retention_max": int,
    "check_max": int,
    "open_max_days": (int, float),
    "watch_ping_interval": (int, float),
    "watch_pong_timeout": (int, float),
    "watch_sweep_interval": (int, float),
    "wake": dict,
    "state_dir": str,
}

# The largest number a setting takes: TOML's inf and nan, or a count of seconds past the
# year 2200, would overflow a clock or a timeout far from the setting that caused it.
MAX_SETTING_NUMBER = 1e9


def _sane_number(value: float) -> bool:
    return math.isfinite(value) and abs(value) <= MAX_SETTING_NUMBER


_POSITIVE = {
    "lease_seconds",
    "auto_reply_limit",
    "max_deliveries",
    "mailbox_cap",
    "connect_timeout",
    "read_timeout",
    "max_response_bytes",
    "prompt_text_limit",
    "request_deadline",
    "retention_days",
    "retention_max",
    "check_max",
    "open_max_days",
    "watch_ping_interval",
    "watch_pong_timeout",
    "watch_sweep_interval",
}


def mask_token(token: str | None) -> str | None:
    if not token:
        return None
    return "****" + token[-4:] if len(token) >= 16 else "****"


def default_config_path() -> Path:
    import platformdirs  # late: only when no config path is given (~3 ms of every run otherwise)

    return Path(platformdirs.user_config_dir("agentcom")) / "config.toml"


def default_state_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_state_dir("agentcom"))


def read_config_file(path: Path) -> dict[str, Any]:
    """The TOML config as a dict; {} when the file does not exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    where = f"config file {path}"
    wake = data.get("wake")
    unknown: list[str] = []
    if any(key not in FILE_KEYS for key in data):
        unknown += _unknown_keys(data, FILE_KEYS, "", _WAKE_KEYS, "wake.")
    if isinstance(wake, Mapping) and any(key not in _WAKE_KEYS for key in wake):
        unknown += _unknown_keys(wake, _WAKE_KEYS, "wake.", FILE_KEYS, "")
    if unknown:
        raise ConfigError(f"unknown setting{'s' if len(unknown) > 1 else ''} in {where}: {'; '.join(unknown)}")
    _check_table(data, FILE_KEYS, where)
    return data


def _unknown_keys(
    table: Mapping[str, Any], kinds: Mapping[str, Any], prefix: str, other: Mapping[str, Any], other_prefix: str
) -> list[str]:
    """Each unknown key with what it likely meant: a close spelling of a known one, or a key of
    the other table (TOML puts every line after `[wake]` into that table)."""
    import difflib  # late: only when a key is unknown (~1 ms of every run otherwise)

    out = []
    for key in table:
        if key in kinds:
            continue
        shown = repr(prefix + key[:40])
        if key in other:
            where = (
                "it goes under [wake]" if other_prefix else "it goes before the [wake] line, or TOML puts it in [wake]"
            )
            out.append(f"{shown} (did you mean {other_prefix + key}? {where})")
            continue
        close = difflib.get_close_matches(key, list(kinds), n=1, cutoff=0.6)
        out.append(f"{shown} (did you mean {prefix + close[0]}?)" if close else f"{shown} (no such setting)")
    return out


def _check_table(table: Mapping[str, Any], kinds: Mapping[str, Any], where: str, prefix: str = "") -> None:
    """Every key known, every value of its type (a bool is never a number)."""
    unknown = [key for key in table if key not in kinds]
    if unknown:
        unknown = _unknown_keys(table, kinds, prefix, {}, "")
        raise ConfigError(f"unknown setting{'s' if len(unknown) > 1 else ''} in {where}: {'; '.join(unknown)}")
    for key, value in table.items():
        kind = kinds[key]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            expected, got = type_name(kind), type_name(type(value))
            raise ConfigError(f"setting {prefix}{key} in {where} must be {expected}, not {got}")


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    list: "a list",
    dict: "a table",
    bool: "a boolean",
}


def type_name(kind: Any) -> str:
    """A TOML type in words, for error messages: 'a number', 'a string or a list'."""
    if kind == (int, float):
        return "a number"
    if isinstance(kind, tuple):
        return " or ".join(type_name(k) for k in kind)
    return _TYPE_NAMES.get(kind, getattr(kind, "__name__", "a value"))


def _shown_value(value: Any) -> str:
    """A wrong value in an error: its type, and the value itself when short (never a token: only
    settings with a type of their own reach here)."""
    if isinstance(value, str):
        return f"{value[:40]!r}"
    return type_name(type(value))


def _read_token_file(path_text: str, where: str) -> str:
    path = Path(path_text).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError(f"cannot read token file {path} (from {where}): {reason}") from None


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    source_name: str = "the command line",
) -> Settings:
    """Build `Settings` from overrides (command line or API keywords) > environment > config file.

    `source_name` says where the overrides came from, for error messages.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    env = os.environ if env is None else env

    config_path, config_src = _pick("config", overrides, env, {}, None, source_name)
    config_path = Path(config_path).expanduser() if config_path else default_config_path()
    file_values = read_config_file(config_path)
    where_file = f"config file {config_path}"
    sources: dict[str, str] = {}

    def get(name: str, default: Any = None) -> Any:
        value, src = _pick(name, overrides, env, file_values, where_file, source_name)
        if value is None:
            return default
        sources[name] = src
        return value

    hub_url = get("hub_url")
    agent_id = get("agent_id")
    token = _load_token(overrides, env, file_values, where_file, sources, source_name)
    missing = [name for name, value in (("hub_url", hub_url), ("agent_id", agent_id), ("token", token)) if not value]
    if missing:
        note = ""
        if config_src is not None and not config_path.exists():
            note = f" (config file {config_path}, from {config_src}, does not exist)"
        raise ConfigError(f"{missing[0]} is not set{note}: {_where_to_set(missing[0], config_path)}")
    hub_url = check_hub_url(str(hub_url), sources.get("hub_url", ""))
    agent_id = check_agent_id(str(agent_id), sources["agent_id"])

    state_dir = get("state_dir")
    values: dict[str, Any] = {
        "hub_url": hub_url,
        "agent_id": agent_id,
        "token": token,
        "state_dir": Path(state_dir).expanduser() if state_dir else default_state_dir(),
        "config_path": config_path,
    }
    values["wake"] = _wake_settings(
        overrides.get("wake", file_values.get("wake")),
        env,
        "wake" in overrides and source_name or f"the [wake] table of {where_file}",
    )
    for name in Settings.field_names():
        if name in values or name == "sources":
            continue
        value = get(name)
        if value is None:
            continue
        values[name] = _coerce(name, value, sources[name])
    return Settings(**values, sources=sources)


_WAKE_KEYS = {
    "mode": str,
    "url": str,
    "token": str,
    "token_file": str,
    "session_key": str,
    "agent_id": str,
    "window": (int, float),
    "min_interval": (int, float),
    "max_batch": int,
    "command": (str, list),
    "shell": bool,
    "timeout": (int, float),
    "context": str,
    "answer_budget": int,
    "answer_window": (int, float),
    "requests_per_minute": int,
    "task_timeout": (int, float),
    "max_tasks": int,
}
_WAKE_NEEDS = {"agent": "url", "wake": "url", "a2a": "url", "command": "command"}


def _wake_settings(table: Any, env: Mapping[str, str], where: str) -> WakeSettings:
    """The `[wake]` table, validated; the token from env > `token` > `token_file`.

    No table (or an empty one) means no wake. A table that is there must be complete for
    its mode: a wake that cannot work is an error at start, never a watch that wakes nobody.
    AGENTCOM_WAKE_MODE and AGENTCOM_WAKE_URL replace the table's mode and url (the wake target
    only: the OpenClaw plugin points its watch at itself this way, the rest stays the user's).
    """
    if table is None:
        table = {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"wake in {where} must be a table")
    _check_table(table, _WAKE_KEYS, where, "wake.")
    values: dict[str, Any] = dict(table)
    overridden = [ENV_VARS[f"wake_{key}"] for key in ("mode", "url") if env.get(ENV_VARS[f"wake_{key}"])]
    for var in overridden:
        values[var.rsplit("_", 1)[1].lower()] = env[var]
    if overridden:
        where = f"{where} with {' and '.join(overridden)}"
    mode = values.get("mode", "agent")
    if mode not in WAKE_MODES:
        raise ConfigError(f"wake.mode in {where} must be one of {', '.join(WAKE_MODES)}")
    needed = _WAKE_NEEDS[mode]
    if values and needed not in values:
        raise ConfigError(f'wake.{needed} is missing in {where}: mode = "{mode}" needs it ({_WAKE_NEED_HELP[needed]})')
    url = _wake_url(values.get("url"), mode, where)
    token = env.get(ENV_VARS["wake_token"]) or values.get("token")
    if not token and values.get("token_file"):
        token = _read_token_file(values["token_file"], where)
    if token is not None:
        token = str(token).strip()
        if not TOKEN_PATTERN.fullmatch(token):
            raise ConfigError(f"the wake token (from {where} or {ENV_VARS['wake_token']}) is malformed")
    session_key = values.get("session_key", "hook:agentcom")
    if not session_key.startswith("hook:"):
        raise ConfigError(
            f"wake.session_key in {where} must start with 'hook:' (OpenClaw's allowed prefix for hook sessions)"
        )
    shell = values.get("shell", False)
    context = values.get("context", "peer")
    if context not in A2A_CONTEXTS:
        raise ConfigError(f"wake.context in {where} must be one of {', '.join(A2A_CONTEXTS)}")
    return WakeSettings(
        mode=mode,
        url=url,
        token=token,
        session_key=session_key,
        agent_id=values.get("agent_id"),
        command=_wake_command(values.get("command"), shell, where),
        shell=shell,
        context=context,
        **_wake_numbers(values, where),
    )


def _wake_url(url: str | None, mode: str, where: str) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"wake.url in {where} must be an http:// URL, like {_URL_EXAMPLE[mode]}")
    if mode == "a2a" and parts.path.strip("/") == "":
        example = _URL_EXAMPLE["a2a"]
        raise ConfigError(f"wake.url in {where} must be the A2A JSON-RPC endpoint (mode a2a), like {example}")
    return url.rstrip("/")


# the [wake] table's numbers, each with the type of its default: >= 0 for these two, > 0 for the rest
_WAKE_NOT_NEGATIVE = ("window", "min_interval")
_WAKE_POSITIVE = (
    "max_batch",
    "timeout",
    "answer_budget",
    "answer_window",
    "requests_per_minute",
    "task_timeout",
    "max_tasks",
)


def _wake_numbers(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = {}
    for key in (*_WAKE_NOT_NEGATIVE, *_WAKE_POSITIVE):
        if key not in values:
            continue
        if not _sane_number(values[key]):
            raise ConfigError(f"wake.{key} in {where} must be a finite number of at most {MAX_SETTING_NUMBER:,.0f}")
        if values[key] < 0 or (key in _WAKE_POSITIVE and values[key] == 0):
            bound = "positive" if key in _WAKE_POSITIVE else "not negative"
            raise ConfigError(f"wake.{key} in {where} must be {bound}")
        out[key] = type(getattr(WakeSettings, key))(values[key])  # int or float, as the default
    return out


_WAKE_NEED_HELP = {
    "url": 'the gateway, like url = "http://127.0.0.1:18789"; for a2a the endpoint, like "http://127.0.0.1:18789/a2a/v1"',
    "command": 'like command = ["my-runtime", "--stdin"]',
}
_URL_EXAMPLE = {
    "agent": "http://127.0.0.1:18789",
    "wake": "http://127.0.0.1:18789",
    "command": "http://127.0.0.1:18789",
    "a2a": "http://127.0.0.1:18789/a2a/v1",
}


def _wake_command(command: Any, shell: bool, where: str) -> tuple[str, ...]:
    """A list of words, run as is; or one string run by the shell, only when `shell = true` says so
    (a string split into words without a shell would break quoting and redirections)."""
    if command is None:
        if shell:
            raise ConfigError(f"wake.shell in {where} is set but wake.command is missing")
        return ()
    if isinstance(command, str):
        if not shell:
            raise ConfigError(
                f'wake.command in {where} is a string: give a list of words, like ["my-runtime", "--stdin"], '
                "or set wake.shell = true to run the string through /bin/sh"
            )
        if not command.strip():
            raise ConfigError(f"wake.command in {where} is empty")
        return (command,)
    if shell:
        raise ConfigError(
            f"wake.shell = true in {where} needs wake.command as one string (a shell command line), not a list"
        )
    if not command or not all(isinstance(c, str) and c for c in command):
        raise ConfigError(f"wake.command in {where} must be a non-empty list of non-empty strings")
    return tuple(command)


def _pick(
    name: str,
    overrides: Mapping[str, Any],
    env: Mapping[str, str],
    file_values: Mapping[str, Any],
    where_file: str | None,
    source_name: str,
):
    if name in overrides:
        return overrides[name], source_name
    var = ENV_VARS.get(name)
    if var and env.get(var):
        return env[var], f"environment variable {var}"
    if name in file_values:
        return file_values[name], where_file
    return None, None


def reread_token(settings: Settings) -> str | None:
    """The token as its source holds it now (a token file, or the config file), for a long
    run whose token the hub stopped taking; None when its source cannot change under a
    running process (the environment, the command line) or holds no usable token."""
    source = settings.sources.get("token", "")
    token: Any
    try:
        if source.startswith("token file "):
            token = _read_token_file(source.removeprefix("token file "), source)
        elif source == f"config file {settings.config_path}":
            values = read_config_file(settings.config_path)
            token = values.get("token") or (
                _read_token_file(str(values["token_file"]), source) if values.get("token_file") else None
            )
        else:
            return None
    except ConfigError:
        return None
    token = str(token or "").strip()
    return token if TOKEN_PATTERN.fullmatch(token) else None


def _load_token(overrides, env, file_values, where_file, sources, source_name) -> str | None:
    # Within one level a literal token beats a token file; a higher level beats both.
    levels = [
        (overrides.get("token"), overrides.get("token_file"), source_name),
        (env.get("AGENTCOM_TOKEN"), env.get("AGENTCOM_TOKEN_FILE"), "the environment"),
        (file_values.get("token"), file_values.get("token_file"), where_file),
    ]
    for token, token_file, where in levels:
        if token:
            source = where
        elif token_file:
            token = _read_token_file(str(token_file), where)
            source = f"token file {Path(str(token_file)).expanduser()}"
        else:
            continue
        token = str(token).strip()
        if not TOKEN_PATTERN.fullmatch(token):
            raise ConfigError(f"the token from {source} is malformed (expected one word of printable characters)")
        sources["token"] = source
        return token
    return None


AGENT_ID_RULE = "1-128 characters, any but control characters (the hub registers any non-empty text that long)"
AGENT_ID_LIMIT = 128  # the real hub's limit (validation/schemas.ex), in characters as a person sees them


def check_agent_id(agent_id: str, source: str) -> str:
    """An agent id as the real hub accepts it: any text of 1 to 128 characters (`Zoë 🔷`), but
    for control characters and lone surrogates, which the hub takes but no config file,
    terminal or URL carries safely. Outside the plain grammar an id is shown quoted and
    escaped (untrusted.safe_sender), and the state folder's name is its plain characters and a
    digest (Settings.agent_state_dir)."""
    agent_id = agent_id.strip()
    if _AGENT_ID.fullmatch(agent_id):
        return agent_id
    problem = None
    if not agent_id:
        problem = "it is empty"
    elif any(unicodedata.category(ch) in ("Cc", "Cs") for ch in agent_id):
        problem = "it holds a control character"
    elif len(agent_id) > AGENT_ID_LIMIT and _characters(agent_id) > AGENT_ID_LIMIT:
        problem = f"it is longer than {AGENT_ID_LIMIT} characters"
    if problem:
        shown = json.dumps(agent_id[:60])
        raise ConfigError(f"agent_id {shown} from {source} is not a valid agent id ({problem}): use {AGENT_ID_RULE}")
    return agent_id


_JOINING = ((0xFE00, 0xFE0F), (0x1F3FB, 0x1F3FF), (0xE0020, 0xE007F), (0xE0100, 0xE01EF))


def _characters(text: str) -> int:
    """Characters as a person sees them (the hub counts grapheme clusters): combining marks,
    variation selectors, skin tones, tags and what a zero-width joiner joins count with the
    character before; two regional indicators make one flag. An approximation of Unicode's
    rules that never counts more than they do for these."""
    count, after_joiner, half_flag = 0, False, False
    for ch in text:
        code = ord(ch)
        if after_joiner:
            after_joiner = False
            continue
        if code == 0x200D:
            after_joiner = True
            continue
        if unicodedata.category(ch) in ("Mn", "Me", "Mc") or any(lo <= code <= hi for lo, hi in _JOINING):
            continue
        if 0x1F1E6 <= code <= 0x1F1FF:
            half_flag = not half_flag
            if not half_flag:
                continue
        else:
            half_flag = False
        count += 1
    return count


def check_hub_url(url: str, source: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"hub_url from {source} must be an http:// or https:// URL, like http://localhost:4000")
    path = parts.path.rstrip("/")
    if path.endswith("/api") or path.endswith("/api/mailbox"):
        raise ConfigError(
            f"hub_url from {source} ends in {path!r}: give the hub's base URL without it, like {parts.scheme}://{parts.netloc}"
        )
    return url.strip().rstrip("/")


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = FILE_KEYS.get(name)
    try:
        if name in ("capabilities", "ignore_from", "allow_from"):
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
                raise ValueError
            return tuple(i.strip() for i in items if i.strip())
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            value = int(value)
        elif kind == (int, float):
            if isinstance(value, bool):
                raise ValueError
            value = float(value)
        else:
            value = str(value)
    except (TypeError, ValueError, OverflowError):
        if name in ("capabilities", "ignore_from", "allow_from"):
            expected = "a list of strings (or one comma-separated string)"
        else:
            expected = type_name(kind)
        raise ConfigError(f"setting {name} from {source} must be {expected}, not {_shown_value(value)}") from None
    if kind in (int, (int, float)):
        _check_bounds(name, value, source)
    if name == "ca_bundle":
        return check_ca_bundle(value, source)
    return value


def _check_bounds(name: str, value: float, source: str) -> None:
    if not _sane_number(value):
        raise ConfigError(f"setting {name} from {source} must be a finite number of at most {MAX_SETTING_NUMBER:,.0f}")
    if name in _POSITIVE and value <= 0:
        raise ConfigError(f"setting {name} from {source} must be positive")
    if name == "lock_timeout" and value < 0:
        raise ConfigError(f"setting {name} from {source} must not be negative")


def check_ca_bundle(path_text: str, source: str) -> str:
    """A CA bundle: a PEM file of certificates, or a folder of them (as requests takes it)."""
    path = Path(path_text).expanduser()
    if not path.exists():
        raise ConfigError(
            f"ca_bundle {str(path)[:200]!r} from {source} does not exist: give the path of a PEM file "
            f"holding the hub's CA certificate"
        )
    return str(path.resolve())


def _where_to_set(name: str, config_path: Path) -> str:
    if name == "token":
        env_part, file_keys = "set AGENTCOM_TOKEN or AGENTCOM_TOKEN_FILE", "token or token_file"
    else:
        env_part, file_keys = f"set {ENV_VARS[name]}", name
    cli_part = f"pass {CLI_OPTIONS[name]}, " if name in CLI_OPTIONS else ""
    return f"{cli_part}{env_part}, or add {file_keys} to {config_path} (`agentcom config init` writes one)"
