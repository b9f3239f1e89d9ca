"""The local state of one agent at one hub: a JSON file guarded by a file lock.

Written atomically (temp file, fsync, rename, fsync of the folder) with mode 0600,
so `kill -9` at any instant leaves either the old or the new file, never a mix.
A file that cannot be parsed is moved aside, and the skill rebuilds from the hub,
which still holds every message we did not ack.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import BusyError, StateError

STATE_VERSION = 1
LOG_LIMIT = 1000  # Tier 0 log entries kept
DEAD_LIMIT = 500  # dead letters kept
RECENT_DONE = 2000  # finished ids kept beyond those still at the hub (late-ack dedupe)


@dataclass
class AgentState:
    """Everything `check` and `ack` remember between runs.

    attention: id -> {"seq", "why", "arrival", "deliveries", "lease_until", "priority", "broadcast"}
        messages that need the agent; deliveries == 0 means not yet returned (pending).
    done: id -> {"seq", "at"}: finished (disposed by Tier 0, acked by the agent, or dead).
    """

    cursor: int = 0
    hub_acked: int = 0
    arrival: int = 0
    attention: dict[str, dict[str, Any]] = field(default_factory=dict)
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead: list[dict[str, Any]] = field(default_factory=list)
    roster: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    replies: dict[str, list[float]] = field(default_factory=dict)
    agents_checked_at: float = 0.0
    recovered: bool = False  # set after a corrupt file was reset: next deliveries count as redelivered

    def knows(self, msg_id: str) -> bool:
        """Seen before: pending, leased, or finished and perhaps not yet deleted at the hub."""
        return msg_id in self.attention or msg_id in self.done

    def to_json(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, **self.__dict__}

    @classmethod
    def from_json(cls, data: Any) -> "AgentState":
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unknown version {data.get('version')!r}")
        state = cls()
        for name, default in state.__dict__.items():
            if name not in data:
                continue
            value = data[name]
            expected = (int, float) if isinstance(default, float) else type(default)
            if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, expected):
                raise ValueError(f"field {name!r} has the wrong type")
            setattr(state, name, value)
        for name in ("attention", "done"):
            for key, entry in getattr(state, name).items():
                if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int):
                    raise ValueError(f"bad {name} entry {key!r}")
        for entry in state.attention.values():
            for key in ("arrival", "deliveries"):
                if not isinstance(entry.get(key), int):
                    raise ValueError(f"bad attention entry field {key!r}")
            if not isinstance(entry.get("lease_until"), (int, float)):
                raise ValueError("bad attention entry lease")
        return state

    def trim(self, at_hub: set[str], now: float) -> None:
        """Bound the state: keep finished ids still at the hub, plus the most recent others."""
        if len(self.done) > RECENT_DONE + len(at_hub):
            others = [(v.get("at", 0), k) for k, v in self.done.items() if k not in at_hub]
            others.sort()
            for _, key in others[: max(0, len(others) - RECENT_DONE)]:
                del self.done[key]
        del self.log[:-LOG_LIMIT]
        del self.dead[:-DEAD_LIMIT]
        cutoff = now - 60
        self.replies = {k: kept for k, v in self.replies.items() if (kept := [t for t in v if t > cutoff])}


class StateStore:
    """Load, save and lock the state file of one (hub, agent) folder."""

    def __init__(self, directory: Path, lock_timeout: float = 10.0):
        self.directory = Path(directory)
        self.path = self.directory / "state.json"
        self.lock_path = self.directory / "state.lock"
        self.lock_timeout = lock_timeout

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise runs for this agent; BusyError after the bounded wait."""
        from filelock import FileLock, Timeout

        self._ensure_dir()
        lock = FileLock(str(self.lock_path), timeout=self.lock_timeout, mode=0o600)
        try:
            lock.acquire()
        except Timeout:
            raise BusyError(f"another agentcom run holds {self.lock_path} (waited {self.lock_timeout:g} s)") from None
        except OSError as exc:
            raise StateError(f"cannot lock {self.lock_path}: {exc.strerror or exc}") from None
        try:
            yield
        finally:
            lock.release()

    def load(self, move_corrupt: bool = True) -> tuple[AgentState, list[str]]:
        """The saved state (fresh when none) and warnings about what had to be repaired."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return AgentState(), []
        except OSError as exc:
            raise StateError(f"cannot read state file {self.path}: {exc.strerror}") from None
        try:
            return AgentState.from_json(json.loads(raw)), []
        except (ValueError, UnicodeDecodeError) as exc:
            reason = str(exc).splitlines()[0][:100]
            state = AgentState(recovered=True)
            if not move_corrupt:
                return state, [f"state file {self.path} is unusable ({reason}); showing the hub's view"]
            aside = self.path.with_name(f"state.json.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
            try:
                os.replace(self.path, aside)
            except OSError as err:
                raise StateError(f"state file {self.path} is corrupt and cannot be moved aside: {err.strerror}") from None
            return state, [f"state file {self.path} was corrupt ({reason}); moved it to {aside} and recovered from the hub"]

    def save(self, state: AgentState) -> None:
        self._ensure_dir()
        data = json.dumps(state.to_json(), separators=(",", ":")).encode()
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".state.", suffix=".tmp", dir=self.directory)
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            tmp = None
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StateError(f"cannot write state file {self.path}: {exc.strerror or exc}") from None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _ensure_dir(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StateError(f"cannot create state folder {self.directory}: {exc.strerror}") from None
