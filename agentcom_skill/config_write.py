"""Writing the config file: `agentcom config init` (a new file, or one replacing an old
file's settings while keeping the others) and `agentcom config token` (a new token where the
file keeps its token). Every file written is 0600; reading and checking stay in config.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import FILE_KEYS, TOKEN_PATTERN, read_config_file
from .errors import ConfigError


def write_config_file(path: Path, values: Mapping[str, Any], force: bool = False) -> None:
    """Write a TOML config file with mode 0600 (it may hold the token)."""
    lines = ["# agentcom configuration (written by `agentcom config init`)"]
    tables = []
    for key, value in values.items():
        if value is None:
            continue
        if key not in FILE_KEYS:
            raise ConfigError(f"unknown setting {key!r}")
        if isinstance(value, Mapping):  # a table (wake): after every top-level key, as TOML wants
            tables += ["", f"[{key}]", *(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None)]
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    text = "\n".join(lines + tables) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"config file {path} already exists (use --force to overwrite it)") from None
    except OSError as exc:
        raise ConfigError(f"cannot write config file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)


def _toml_value(value: Any) -> str:
    # JSON strings, numbers and arrays of strings are valid TOML values.
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(str(v)) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # Not ASCII-escaped: TOML has no \ud83d-style surrogate pairs, so "🔷" is written as it is;
    # DEL, the one control character JSON leaves bare that TOML refuses, is escaped.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


# Replacing a config file's settings, keeping the others -----------------------------

_IDENTITY = ("hub_url", "agent_id")
_TOKEN_KEYS = ("token", "token_file")


def keep_previous(path: Path, values: Mapping[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """`config init --force` over an existing file: the new values, plus every setting of the
    old file they do not replace. The old token (or token file) is dropped when a new one is
    given or the hub or agent id changed (it belonged to the other identity). Returns the
    merged values and the names of the settings kept and dropped; an old file that cannot be
    read is replaced whole (everything in it dropped)."""
    try:
        old = read_config_file(path)
    except ConfigError:
        return dict(values), [], ["everything in the old file (it could not be read)"]
    new_token = any(values.get(k) for k in _TOKEN_KEYS)
    moved = any(k in old and values.get(k) is not None and old[k] != values[k] for k in _IDENTITY)
    merged, kept, dropped = dict(values), [], []
    for key, value in old.items():
        if values.get(key) is not None:
            continue
        if key in _TOKEN_KEYS and (new_token or moved):
            dropped.append(key)
        else:
            merged[key] = value
            kept.append(key)
    return merged, kept, dropped


def replace_token(path: Path, token: str) -> tuple[str, Path]:
    """Put a new token where the config file at `path` keeps its token, changing nothing else:
    its `token` line, else the file its `token_file` names, else a new `token` line. Every
    file written is 0600 and replaced at once (never half written). Returns what was written
    ("config file" or "token file") and where. Never puts the token in an error."""
    token = token.strip()
    if not TOKEN_PATTERN.fullmatch(token):
        raise ConfigError("the new token is malformed (expected one word of 8-512 printable characters)")
    path = path.expanduser()
    if not path.exists():
        raise ConfigError(f"no config file at {path}: `agentcom config init` writes one")
    data = read_config_file(path)
    if "token" not in data and isinstance(data.get("token_file"), str):
        target = Path(data["token_file"]).expanduser()
        _write_private(target, token + "\n", "token file")
        return "token file", target
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    first_table = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    at = next((i for i in range(first_table) if re.match(r"\s*token\s*=", lines[i])), None)
    line = f"token = {json.dumps(token)}\n"
    if at is not None:
        lines[at] = line
    else:
        if first_table and not lines[first_table - 1].endswith("\n"):
            lines[first_table - 1] += "\n"
        lines.insert(first_table, line)
    new_text = "".join(lines)
    try:
        same = tomllib.loads(new_text) == {**data, "token": token}
    except tomllib.TOMLDecodeError:
        same = False
    if not same:
        raise ConfigError(f"cannot replace the token in {path} without touching its other lines: edit its token line")
    _write_private(path.resolve(), new_text, "config file")
    return "config file", path


def _write_private(path: Path, text: str, what: str) -> None:
    """Write `text` to `path` with mode 0600, all at once: a new file renamed over the old."""
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"cannot write {what} {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConfigError(f"cannot write {what} {path}: {exc.strerror}") from None
