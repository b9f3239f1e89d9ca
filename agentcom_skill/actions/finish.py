"""Finishing messages the agent was shown: `ack` (and the hub's prefix after it), `defer`, `dismiss`."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..delivery import batch_keys
from ..errors import AgentComError, UsageError
from ..message import MailboxBatch
from ..store import MessageStore
from .check import ack_hub_prefix, run_check
from .common import hub_client, open_store, resolve_settings
from .refs import MAX_SEQ, named_refs, resolve_refs

if TYPE_CHECKING:
    from .common import Hub


def ack(
    refs: int | str | Sequence[int | str] | None = None,
    *,
    ids: Iterable[str] = (),
    through: int | None = None,
    settings: Settings | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Finish messages the agent was shown: those named (seqs or ids), those up to `through`,
    or, with nothing named, every one shown so far. Naming one never shown is an error."""
    s = resolve_settings(settings, overrides)
    named = named_refs(refs, ids)
    if through is not None and (
        isinstance(through, bool) or not isinstance(through, int) or not 0 <= through <= MAX_SEQ
    ):
        raise UsageError(f"through must be a seq (a whole number from 0 to {MAX_SEQ})")
    with hub_client(s) as hub, open_store(s) as store:
        return run_ack(hub, store, s, named, through, time.time())


def run_ack(
    hub: Hub, store: MessageStore, s: Settings, refs: Sequence[int | str], through: int | None, now: float
) -> dict[str, Any]:
    with store.write():
        targets, already = resolve_refs(store, refs, need_shown=True)
        if through is not None or not refs:
            named = {r["id"] for r in targets}
            targets += [r for r in store.shown_open(through) if r["id"] not in named]
        store.finish([r["id"] for r in targets], "done", now)
    warnings = store.take_warnings()
    waiting_on = None
    up_to: int | None = None
    error: str | None = None
    try:
        batch = hub.poll(s.agent_id, 0)
        keys = batch_keys(batch)
        if len(store.known(keys)) < len(set(keys)):
            # The hub holds a message this store never took in (a channel message the watch has
            # not swept yet): take it in as the watch's drain does (stored, Tier 0 answers,
            # nothing leased or shown), so whatever this ack names is one `show` can open.
            run_check(hub, store, s, limit=0, now=now, agents_check=False, batch=batch)
    except AgentComError as exc:
        error = f"could not ack the hub (it will be retried): {exc}"
    else:
        up_to, error = ack_hub_prefix(hub, store, s, batch)
        if up_to is None and error is None:
            waiting_on = _first_open_at_hub(store, batch)
    if error:
        warnings.append(error)
    if up_to is not None:
        with store.write():
            store.set_meta("hub_acked", up_to)
    return {
        "agent_id": s.agent_id,
        "acked": [
            {"id": r["id"], "seq": r["seq"]} for r in sorted(targets, key=lambda r: (r["seq"] is None, r["seq"] or 0))
        ],
        "already_finished": [{"id": r["id"], "seq": r["seq"]} for r in already],
        "hub_acked_up_to": up_to,
        "hub_waiting_on": waiting_on,
        "unacked": len(store.shown_open()),
        "warnings": warnings,
    }


def _first_open_at_hub(store: MessageStore, batch: MailboxBatch) -> dict[str, Any] | None:
    """The oldest message at the hub not finished here: the hub is acked only past it."""
    finished = store.finished([m.id for m in batch.messages])
    for msg in batch.messages:
        if msg.id not in finished:
            return {"id": msg.id, "seq": msg.seq}
    return None


def defer(
    refs: int | str | Sequence[int | str] | None = None,
    seconds: float = 1800.0,
    *,
    ids: Iterable[str] = (),
    settings: Settings | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Put shown messages aside for `seconds`: they come back then (not counted as a failed delivery)."""
    s = resolve_settings(settings, overrides)
    named = named_refs(refs, ids, required_for="defer")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 366 * 86400:
        raise UsageError("defer time must be between 1 second and a year")
    now = time.time()
    with open_store(s) as store, store.write():
        targets, already = resolve_refs(store, named, need_shown=True)
        store.defer([r["id"] for r in targets], now + seconds, now)
    return {
        "agent_id": s.agent_id,
        "deferred": [{"id": r["id"], "seq": r["seq"]} for r in targets],
        "until": now + seconds,
        "already_finished": [{"id": r["id"], "seq": r["seq"]} for r in already],
    }


def dismiss(
    refs: int | str | Sequence[int | str] | None = None,
    *,
    ids: Iterable[str] = (),
    settings: Settings | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Finish messages without acting on them; they stay in the history as dismissed."""
    s = resolve_settings(settings, overrides)
    named = named_refs(refs, ids, required_for="dismiss")
    with open_store(s) as store, store.write():
        targets, already = resolve_refs(store, named, need_shown=False)
        store.finish([r["id"] for r in targets], "dismissed", time.time(), "dismissed by the agent")
    return {
        "agent_id": s.agent_id,
        "dismissed": [{"id": r["id"], "seq": r["seq"]} for r in targets],
        "already_finished": [{"id": r["id"], "seq": r["seq"]} for r in already],
    }
