"""Where this agent stands (`status`), its own status (`set_status`), and the agents the hub lists."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from ..config import Settings, mask_token
from ..errors import AgentComError, AuthError, HubProtocolError, HubUnavailableError, UsageError
from ..message import MailboxBatch
from ..watchstate import read_status, watch_alive
from .check import current_status, seq_restarted
from .common import forget_unused_state, hub_client, open_store, resolve_settings
from .hazards import connected_hazard, note_listed_statuses, watch_warnings
from .send import send_and_record


def status(*, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Where we stand: everything kept here (pending, leased, deferred and dead-lettered
    messages, the watch, hazards), then the hub's health.

    The hub being down or refusing the token does not raise: `hub.ok` is False and `hub.error`
    says why, with the exit code the CLI ends with; everything local is there all the same.
    """
    s = resolve_settings(settings, overrides)
    now = time.time()
    made_here = not s.agent_state_dir().exists()
    with open_store(s) as store:
        counts = store.counts(now)
        cursor, hub_acked = store.get_meta("cursor", 0), store.get_meta("hub_acked")
        last_contact = store.get_number("hub_ok_at") or None
        my_status = current_status(store, s)
        groups = store.groups()
        warnings = store.take_warnings()
    watch = read_status(s.agent_state_dir())
    hazards: list[str] = watch_warnings(watch) if watch is not None else []
    hub_part: dict[str, Any] = {"ok": False, "agents_connected": None, "error": None, "last_contact": last_contact}
    mailbox = None
    restarted: MailboxBatch | None = None
    try:
        with hub_client(s) as hub:
            health = hub.health()
            polled = hub.poll(s.agent_id, 0)
            mailbox = len(polled.messages)
            if seq_restarted(polled, hub_acked):
                warnings.append(
                    f"the hub's seq restarted: its mailbox ends at seq {polled.last_seq}, below seq {hub_acked} "
                    "acked earlier; that record is dropped"
                )
                restarted, hub_acked = polled, None
            if not polled.complete:
                hazards.append(
                    f"the mailbox's reply is over max_response_bytes: it holds more than the {mailbox} message(s)"
                    " read; check takes them a part at a time"
                )
            if mailbox >= 0.8 * s.mailbox_cap:
                hazards.append(f"mailbox holds {mailbox} messages, near the hub's cap of {s.mailbox_cap}")
            if watch is None:  # our own watch is the one connection expected under our id
                hazards += connected_hazard(hub, s)
        hub_part.update(
            ok=health.get("status") == "ok", agents_connected=health.get("agents_connected"), last_contact=now
        )
    except (HubUnavailableError, AuthError, HubProtocolError) as exc:
        hub_part["error"] = {"kind": exc.kind, "message": str(exc), "exit_code": exc.exit_code}
        if made_here:  # the first contact failed: no folder for a hub or id that may be a typo
            forget_unused_state(s.agent_state_dir())
    if restarted is not None:
        with contextlib.suppress(AgentComError), open_store(s) as store, store.write():
            if seq_restarted(restarted, store.get_meta("hub_acked")):
                store.set_meta("hub_acked", None)
    return {
        "agent_id": s.agent_id,
        "hub_url": s.hub_url,
        "token": mask_token(s.token),
        "state_dir": str(s.agent_state_dir()),
        "hub": hub_part,
        "cursor": cursor,
        "hub_acked": hub_acked,
        "mailbox": mailbox,
        "pending": counts["open"] - counts["in_lease"] - counts["deferred"],
        "in_lease": counts["in_lease"],
        "deferred": counts["deferred"],
        "dead_letters": counts["dead"],
        "stored": counts["stored"],
        "status": my_status,
        "groups": groups,
        "watch": watch,
        "hazards": hazards,
        "warnings": warnings,
    }


def set_status(text: str, *, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Set this agent's status: sent in auto-replies from now on; a live watch announces it
    over its WebSocket, and without one it is broadcast as a `status` message."""
    s = resolve_settings(settings, overrides)
    if not isinstance(text, str) or not text.strip() or len(text) > 500:
        raise UsageError("the status must be a non-empty text of at most 500 characters")
    text = text.strip()
    with open_store(s) as store, store.write():
        store.set_meta("status", text)
        store.set_meta("status_set_at", time.time())
    if watch_alive(s.agent_state_dir()):
        return {"agent_id": s.agent_id, "status": text, "via": "watch", "warnings": []}
    sent = send_and_record(s, "broadcast", "status", {"status": text}, None, "send", [])
    return {"agent_id": s.agent_id, "status": text, "via": "broadcast", "id": sent["id"], "warnings": sent["warnings"]}


def agents(*, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Agents connected to the hub by WebSocket (the hub lists no others). Their statuses are
    noted in the peers' roster `log` shows."""
    s = resolve_settings(settings, overrides)
    with hub_client(s) as hub:
        listed = hub.agents()
    with contextlib.suppress(AgentComError), open_store(s) as store:
        note_listed_statuses(store, s, listed, time.time())
    return {"agents": listed}
