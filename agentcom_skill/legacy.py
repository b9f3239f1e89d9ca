"""One-time import of the previous release's `state.json` into the message store.

That file kept ids, seqs and delivery state but no message bodies (the hub held them), so
imported messages are stubs whose bodies are filled in by the next poll. The import runs
under the old release's file lock (so an old process cannot write the file meanwhile), in
one transaction, and then renames the file aside. Across it no message is lost, none is
shown again inside its lease, and no ping is answered twice (answered ones are imported
as finished, so Tier 0's rule 1 drops them).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .delivery import OPEN_STATES
from .errors import BusyError, StateError
from .files import refuse_links
from .message import PRIORITIES
from .store import MessageStore
from .tier0 import DISPOSITIONS

LEGACY_STATE = "state.json"
LEGACY_LOCK = "state.lock"


def has_state_file(directory: Path) -> bool:
    return os.path.lexists(directory / LEGACY_STATE)


def import_state_file(store: MessageStore, directory: Path, lock_timeout: float) -> None:
    """Import `state.json` into `store` once (through its public interface), then rename it aside."""
    from filelock import FileLock, Timeout  # late: only an upgrade from 0.1 needs it (~40 ms to import)

    path = directory / LEGACY_STATE
    refuse_links(path, directory / LEGACY_LOCK)
    lock = FileLock(str(directory / LEGACY_LOCK), timeout=lock_timeout, mode=0o600)
    try:
        lock.acquire()
    except Timeout:
        raise BusyError(f"an older agentcom run holds {directory / LEGACY_LOCK}") from None
    except OSError as exc:
        raise StateError(f"cannot lock {directory / LEGACY_LOCK}: {exc.strerror or exc}") from None
    try:
        if not path.exists():
            return  # another run imported it while we waited
        stamp = time.strftime("%Y%m%dT%H%M%S")
        if not store.get_meta("legacy_imported"):
            try:
                data = json.loads(path.read_bytes())
                if not isinstance(data, dict) or data.get("version") != 1:
                    raise ValueError("not a state file of version 1")
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                aside = path.with_name(f"{LEGACY_STATE}.corrupt-{stamp}-{os.getpid()}")
                _rename(path, aside)
                with store.write():
                    store.set_meta("legacy_imported", time.time())
                    store.set_meta("recovered", 1)
                store.warnings.append(
                    f"old state file {path} was unusable ({str(exc)[:80]}); moved it to {aside} and recovered from "
                    f"the hub"
                )
                return
            with store.write():
                _import(store, data)
                store.set_meta("legacy_imported", time.time())
        _rename(path, path.with_name(f"{LEGACY_STATE}.imported-{stamp}"))
    finally:
        lock.release()


def _rename(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except OSError as exc:
        raise StateError(f"cannot move the old state file {src} aside: {exc.strerror}") from None


def _import(store: MessageStore, data: dict[str, Any]) -> None:
    now = time.time()
    store.import_stubs(_stub_rows(data, now))
    for peer, info in _dict(data.get("roster")).items():
        if isinstance(info, dict):
            timestamp = info.get("timestamp") if isinstance(info.get("timestamp"), int) else None
            store.set_peer(peer, _str(info.get("status")), timestamp, None, now)
    for sender, times in _dict(data.get("replies")).items():  # the per-minute budget carries over
        store.add_reply_times(sender, [at for at in _list(times) if isinstance(at, (int, float))])
    for key in ("cursor", "hub_acked", "agents_checked_at"):
        if isinstance(data.get(key), (int, float)) and not isinstance(data.get(key), bool):
            store.set_meta(key, data[key])
    if data.get("recovered") is True:
        store.set_meta("recovered", 1)


def _stub_rows(data: dict[str, Any], now: float) -> list[tuple[Any, ...]]:
    """The messages 0.1 knew, as rows for `MessageStore.import_stubs` (their bodies come later)."""
    log = {e.get("id"): e for e in _list(data.get("log")) if isinstance(e, dict)}
    rows: list[tuple] = []

    def add(msg_id: Any, seq: Any, state: str, disposition: str, reason: str, **extra: Any) -> None:
        if not isinstance(msg_id, str):
            return
        entry = log.get(msg_id, {})
        rows.append(
            (
                msg_id,
                seq if isinstance(seq, int) else None,
                _str(extra.get("sender") or entry.get("from")),
                _str(extra.get("type") or entry.get("type")),
                _str(extra.get("text") or entry.get("text")),
                entry.get("disposition") if entry.get("disposition") in DISPOSITIONS else disposition,
                entry.get("rule") if isinstance(entry.get("rule"), int) else None,
                _str(entry.get("reason")) or reason,
                state,
                extra.get("priority") if extra.get("priority") in PRIORITIES else "normal",
                int(bool(extra.get("broadcast"))),
                int(extra.get("deliveries", 0)),
                int(extra.get("expired", 0)),
                int(bool(extra.get("shown"))),
                extra.get("due"),
                None if state in OPEN_STATES else now,
                now,
            )
        )

    for msg_id, e in _dict(data.get("attention")).items():
        if not isinstance(e, dict):
            continue
        deliveries: int = e["deliveries"] if isinstance(e.get("deliveries"), int) else 0
        shown = bool(e.get("shown"))
        state = "pending" if deliveries == 0 else ("shown" if shown else "leased")
        due = e.get("lease_until") if isinstance(e.get("lease_until"), (int, float)) else None
        add(
            msg_id,
            e.get("seq"),
            state,
            "attention",
            _str(e.get("why")) or "imported",
            priority=e.get("priority"),
            broadcast=e.get("broadcast"),
            deliveries=deliveries,
            expired=max(0, deliveries - 1),
            shown=shown,
            due=due,
        )
    for d in _list(data.get("dead")):
        if isinstance(d, dict):
            add(
                d.get("id"),
                d.get("seq"),
                "dead",
                "attention",
                "dead letter (imported)",
                sender=d.get("from"),
                type=d.get("type"),
                text=d.get("text"),
                deliveries=d.get("deliveries") if isinstance(d.get("deliveries"), int) else 0,
                shown=True,
            )
    for msg_id, e in _dict(data.get("done")).items():
        add(msg_id, e.get("seq") if isinstance(e, dict) else None, "done", "attention", "finished (imported)")
    return rows


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
