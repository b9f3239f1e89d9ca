"""The read-only actions over what is kept here: `show`, `inbox`, `thread`, `search`, `sent`,
`log` (usable without the hub, guarantee 12).
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..a2a_tasks import A2ATasks
from ..config import Settings
from ..delivery import OPEN_STATES, STATES, bounded_due, message_view
from ..errors import UsageError
from ..groups import group_address
from ..message import PRIORITIES, ROOM, payload_text
from ..store import AMBIGUOUS_SHOWN, AmbiguousRef, row_dict, row_message
from ..tier0 import DISPOSITIONS
from ..untrusted import safe_sender, safe_type
from .common import check_limit, is_confirmed, open_store, resolve_settings
from .refs import not_kept, parse_ref, stored_row

THREAD_LIMIT = 200


def show(ref: int | str, *, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """One stored message in full, with its state; changes nothing."""
    s = resolve_settings(settings, overrides)
    row, warnings = stored_row(s, parse_ref(ref), need_body=False)
    entry = history_entry(row)
    return {**entry, "warnings": warnings} if warnings else entry


def history_entry(row: Any) -> dict[str, Any]:
    """A stored message for `show`, `inbox`, `search`, `thread`, `log`."""
    r = row_dict(row)
    msg = row_message(row)
    if msg is not None:
        view = message_view(msg, r["reason"] or "", r["deliveries"], r["deliveries"] > 1)
    else:  # a stub kept by an older release: what it logged
        view = {
            "seq": r["seq"],
            "id": r["id"],
            "from": r["sender"],
            "to": None,
            "type": r["type"] or "chat",
            "text": r["text"],
            "payload": None,
            "reply_to": None,
            "timestamp": None,
            "broadcast": False,
            "priority": r["priority"],
            "redelivered": False,
            "deliveries": r["deliveries"],
            "why": r["reason"] or "",
            "untrusted": True,
        }
    view.update(
        direction="in",
        state=r["state"],
        disposition=r["disposition"],
        rule=r["rule"],
        received_at=r["received_at"],
        due=bounded_due(r["due"], r.get("span"), time.time()) if r["state"] in OPEN_STATES else r["due"],
    )
    return view


def sent_entry(row: Any) -> dict[str, Any]:
    r = row_dict(row)
    payload = json.loads(r["payload"])
    text = payload_text(payload) if isinstance(payload, dict) else None
    priority = payload.get("priority") if payload.get("priority") in PRIORITIES else "normal"
    entry = {
        "direction": "out",
        "id": r["id"],
        "seq": None,
        "from": None,
        "to": r["recipient"],
        "type": r["type"],
        "text": text,
        "payload": payload,
        "reply_to": r["reply_to"],
        "priority": priority,
        "kind": r["kind"],
        "sent_at": r["sent_at"],
        "confirmed": is_confirmed(r["id"]),
    }
    if isinstance(r["recipient"], str) and (r["recipient"].startswith("#") or r["recipient"] == ROOM):
        entry["channel"] = r["recipient"]
    return entry


def inbox(
    sender: str | None = None,
    type: str | None = None,  # noqa: A002
    state: str | None = None,
    since: float | None = None,
    limit: int = 20,
    channel: str | None = None,
    *,
    settings: Settings | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Recent stored messages of every disposition and state, newest first (`channel`: those
    said in "#name" or "@room")."""
    s = resolve_settings(settings, overrides)
    check_limit(limit)
    if state is not None and state not in STATES:
        raise UsageError(f"state must be one of {', '.join(STATES)}")
    since_at = None if since is None else time.time() - since
    where = None if channel is None else group_address(channel).name
    with open_store(s) as store:
        rows = store.messages(sender=sender, type_=type, state=state, since=since_at, limit=limit, channel=where)
        counts = store.counts(time.time())
        warnings = store.take_warnings()
    return {
        "agent_id": s.agent_id,
        "messages": [history_entry(r) for r in rows],
        "counts": counts,
        "warnings": warnings,
    }


def search(text: str, limit: int = 20, *, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Stored messages whose text or sender matches, newest first."""
    s = resolve_settings(settings, overrides)
    check_limit(limit)
    if not isinstance(text, str) or not text.strip():
        raise UsageError("give something to search for")
    with open_store(s) as store:
        rows = store.search(text.strip(), limit)
        warnings = store.take_warnings()
    return {"agent_id": s.agent_id, "query": text, "messages": [history_entry(r) for r in rows], "warnings": warnings}


def sent(limit: int = 20, *, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Messages this agent sent (send, reply, auto-replies), newest first."""
    s = resolve_settings(settings, overrides)
    check_limit(limit)
    with open_store(s) as store:
        rows = store.sent_messages(limit)
        warnings = store.take_warnings()
    return {"agent_id": s.agent_id, "messages": [sent_entry(r) for r in rows], "warnings": warnings}


def thread(ref: int | str, *, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """The reply_to chain around a message, both ways, our own sent messages included, in time order."""
    s = resolve_settings(settings, overrides)
    parsed = parse_ref(ref)
    with open_store(s) as store:
        start = store.resolve(parsed)
        if start is None:
            sent_ids = store.sent_ids(parsed) if isinstance(parsed, str) else []
            if not sent_ids:
                raise not_kept(parsed)
            if len(sent_ids) > 1:
                ours = [{"id": i, "seq": None, "sender": s.agent_id} for i in sent_ids[:AMBIGUOUS_SHOWN]]
                raise AmbiguousRef(str(parsed), ours, more=len(sent_ids) > AMBIGUOUS_SHOWN)
            frontier = {sent_ids[0]}
        else:
            frontier = {start["id"]}
        received: dict[str, Any] = {}
        sent_rows: dict[str, Any] = {}
        seen: set[str] = set()
        while frontier and len(seen) < THREAD_LIMIT:
            seen |= frontier
            ids = sorted(frontier)
            found = list(store.messages(ids=ids, limit=THREAD_LIMIT)) + store.replies_to(ids)
            found_sent = store.sent_messages(ids=ids) + store.sent_messages(reply_to=ids)
            nxt: set[str] = set()
            for r in found:
                received[r["id"]] = r
                nxt |= {r["id"], *([r["reply_to"]] if r["reply_to"] else [])}
            for r in found_sent:
                sent_rows[r["id"]] = r
                nxt |= {r["id"], *([r["reply_to"]] if r["reply_to"] else [])}
            frontier = nxt - seen
        warnings = store.take_warnings()
    entries = [history_entry(r) for r in received.values()] + [sent_entry(r) for r in sent_rows.values()]
    entries.sort(key=lambda e: (e.get("timestamp") or 0) / 1000 if e["direction"] == "in" else e["sent_at"])
    return {"agent_id": s.agent_id, "messages": entries, "warnings": warnings}


def log(
    disposition: str | None = None, limit: int = 50, *, settings: Settings | None = None, **overrides: Any
) -> dict[str, Any]:
    """What Tier 0 handled and why (oldest first), peers' latest statuses, and dead letters."""
    s = resolve_settings(settings, overrides)
    if disposition is not None and disposition not in DISPOSITIONS:
        raise UsageError(f"disposition must be one of {', '.join(DISPOSITIONS)}")
    check_limit(limit)
    with open_store(s) as store:
        if disposition is None:
            rows = [r for d in DISPOSITIONS for r in store.messages(disposition=d, limit=limit)]
            rows = sorted(rows, key=lambda r: r["rowid"])[-limit:]
        else:
            rows = list(reversed(store.messages(disposition=disposition, limit=limit)))
        dead = list(reversed(store.messages(state="dead", limit=limit)))
        peers = store.peers()
        warnings = store.take_warnings()
        a2a_failures = A2ATasks(store).failures(10)
    for f in a2a_failures:  # the watch's A2A tasks that ended without an answer (mode a2a)
        # Our words only: what the agent's side said (text a peer can steer) is each failure's
        # `said`, which the renderings show apart, fenced for an LLM.
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f["at"] or 0))
        warnings.append(
            f"A2A task {f['task']} for {safe_sender(f['peer'])} ({len(f['ids'])} message(s)) "
            f"{safe_type(f['outcome'])} at {when}; its messages went back to `agentcom check`"
        )
    return {
        "agent_id": s.agent_id,
        "entries": [history_entry(r) for r in rows],
        "roster": peers,
        "dead_letters": [history_entry(r) for r in dead],
        "a2a_failures": a2a_failures,
        "warnings": warnings,
    }
