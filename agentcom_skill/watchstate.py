"""Whether an `agentcom watch` runs for this agent, and what it last reported.

The watch holds an exclusive `flock` on `watch.lock` in the agent's state folder for as long
as it runs (the kernel drops it when the process dies, `kill -9` included), and rewrites
`watch.json` on each event. Anyone can probe the lock with a shared, non-blocking attempt.
No WebSocket code is imported here: `check` and `status` stay cheap.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import StateError
from .untrusted import neutralise

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no watch detection
    fcntl = None

LOCK_NAME = "watch.lock"
STATUS_NAME = "watch.json"


def _lock_fd(directory: Path) -> int:
    try:  # never through a symbolic link: neither the agent's folder nor the lock may be one
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            return os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600, dir_fd=folder)
        finally:
            os.close(folder)
    except OSError as exc:
        raise StateError(
            f"cannot open {directory / LOCK_NAME}: {exc.strerror} (a symbolic link there is refused)"
        ) from None


def watch_alive(directory: Path) -> bool:
    """True while a watch process holds the lock."""
    if fcntl is None:  # pragma: no cover - not POSIX: no watch detection
        return False
    path = directory / LOCK_NAME
    if not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def hold_watch_lock(directory: Path, attempts: int = 20) -> int | None:
    """The watch's lock: a file descriptor to keep open, or None when another watch holds it."""
    if fcntl is None:  # pragma: no cover - not POSIX
        raise StateError("agentcom watch needs a POSIX system (flock)")
    fd = _lock_fd(directory)
    for _ in range(attempts):  # a probe holds a shared lock for an instant: try a little
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            time.sleep(0.05)
            continue
        try:  # who holds it, for a second watch to name
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        return fd
    os.close(fd)
    return None


def lock_holder(directory: Path) -> int | None:
    """The pid of the watch holding the lock, as it wrote it there (None when unknown)."""
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            text = os.read(fd, 32).decode("ascii").strip()
        finally:
            os.close(fd)
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def write_status(directory: Path, status: dict[str, Any]) -> None:
    """watch.json, replaced atomically (readers never see half of it)."""
    tmp = directory / f".{STATUS_NAME}.{os.getpid()}.tmp"
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)  # a stale one, or a link someone planted: never written through
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(status, fh)
        os.replace(tmp, directory / STATUS_NAME)
    except OSError:
        pass  # the status file is informational: never fail the watch for it


class StatusBoard:
    """What a running watch reports, from its socket thread and its wake thread alike (one
    lock): each event through `events` (a log line; a JSON line with --jsonl), and `status`,
    rewritten to watch.json, which `status`, `check` and `doctor` read."""

    def __init__(
        self, directory: Path, status: dict[str, Any], events: Callable[..., None], clock: Callable[[], float]
    ):
        self.directory = directory
        self.status = status
        self.events = events
        self.clock = clock
        self.lock = threading.Lock()

    def event(self, kind: str, text: str, persist: bool = True, **fields: Any) -> None:
        with self.lock:
            self.events(kind, text, **fields)
            self.status["last_event"] = f"{kind}: {neutralise(text)[:200]}"
            self.status["last_event_at"] = self.clock()
            if persist:
                write_status(self.directory, self.status)

    def update(self, persist: bool = True, **fields: Any) -> None:
        with self.lock:
            self.status.update(fields)
            if persist:
                write_status(self.directory, self.status)

    def persist(self) -> None:
        with self.lock:
            write_status(self.directory, self.status)


def read_status(directory: Path) -> dict[str, Any] | None:
    """The live watch's last report, or None when no watch runs."""
    if not watch_alive(directory):
        return None
    try:
        fd = os.open(directory / STATUS_NAME, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, encoding="utf-8") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return {"alive": True}
    return {**data, "alive": True} if isinstance(data, dict) else {"alive": True}
