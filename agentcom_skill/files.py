"""File safety for state files: private files (0600) and folders (0700), never opened
through a symbolic link, and a warning when others may write the folder holding them.
Guarantee 9 (protocol.md part 4). Imports only `errors`; the store, the 0.1 import
(`legacy.py`) and the local hub's store use it."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import StateError

__all__ = ["create_private", "make_private_folder", "refuse_links", "shared_folder_warning"]


def create_private(path: Path) -> None:
    """Create the database file with mode 0600 (SQLite gives its -wal and -shm the same).

    Only when it does not exist: opening and closing an existing database file would drop
    every POSIX lock this process holds on it (closing any descriptor of a file does), and
    another process could then take the WAL for unused, checkpoint it and delete it under
    our open connections, whose later commits nobody else would ever see.
    """
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except FileExistsError:
        pass


def refuse_links(*paths: Path) -> None:
    """State files are never opened through a symbolic link: a link planted in the state folder
    (even a dangling one) would make us create or write a file wherever it points."""
    for path in paths:
        if os.path.islink(path):
            raise StateError(
                f"refusing to use {path}: it is a symbolic link (state files are never opened through one); remove it"
            )


def shared_folder_warning(directory: Path) -> str | None:
    """A warning when the state folder (or the one holding it) can be written by others, who
    could then replace the store or plant links in it."""
    for folder in (directory, directory.parent):
        try:
            mode = folder.stat().st_mode
        except OSError:
            continue
        if mode & 0o022 and not mode & 0o1000:  # group or others may write (the sticky bit limits that)
            return (
                f"state folder {folder} is writable by others (mode {mode & 0o777:o}): they could replace the message"
                f" store; run chmod go-w {folder}"
            )
    return None


def make_private_folder(directory: Path) -> None:
    """Create a state folder (and those above it) with mode 0700; never through a link (the
    agent's own folder too: the state folder above it may be a link)."""
    refuse_links(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StateError(f"cannot create state folder {directory}: {exc.strerror}") from None
