"""What stands in the way of delivery (guarantee 7): another connection under our id, a watch
that is not connected or whose wakes fail; and the peers' statuses the hub lists.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..errors import AgentComError
from ..store import MessageStore

if TYPE_CHECKING:
    from .common import Hub


def watch_connected(watch: Mapping[str, Any] | None) -> bool:
    """Whether a watch runs and holds its WebSocket: only then does the hub push everything to
    it (and keep nothing in the mailbox), so that reading the store alone is complete."""
    return watch is not None and bool(watch.get("connected_since"))


def watch_warnings(watch: Mapping[str, Any]) -> list[str]:
    """What a live watch reports that the agent or a person should know: that it is not
    connected, its hazards, and its last wake error while no wake has gone through since."""
    out = []
    if not watch_connected(watch):
        out.append(
            f"the watch runs but is not connected to the hub (last event: {watch.get('last_event') or 'none yet'}); "
            "check polls the hub meanwhile"
        )
    out += [str(h) for h in watch.get("hazards") or []]
    error = watch.get("last_wake_error")
    if isinstance(error, Mapping) and not error.get("cleared_at"):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(error.get("at") or 0)))
        out.append(
            f"the watch's last wake failed ({error.get('mode')}, {when}, {error.get('status')}): "
            f"{error.get('detail')}; to fix: {error.get('fix')} (this stands until a wake goes through;"
            f" once fixed, `kill -HUP {watch.get('pid', 'PID')}` has the watch try at once)"
        )
    return out


def connected_hazard(hub: Hub, s: Settings, store: MessageStore | None = None) -> list[str]:
    """A hazard when another connection holds our id; with `store`, the peers' statuses the
    hub lists are noted on the way (`log` shows them)."""
    try:
        agents_listed = hub.agents()
    except AgentComError as exc:
        return [f"could not list connected agents: {exc}"]
    if store is not None:
        with contextlib.suppress(AgentComError):  # a roster not refreshed this time is no failure
            note_listed_statuses(store, s, agents_listed, time.time())
    if any(a.get("agent_id") == s.agent_id for a in agents_listed):
        return [
            "this agent id is connected to the hub by WebSocket: direct messages are pushed there and bypass this "
            "mailbox"
        ]
    return []


def note_listed_statuses(store: MessageStore, s: Settings, listed: Sequence[Mapping[str, Any]], now: float) -> None:
    """Peers' statuses as the hub's agent list shows them, into the roster wherever they
    differ from the last one kept (a status set over a peer's WebSocket reaches us only there)."""
    statuses = {
        a["agent_id"]: a["status"]
        for a in listed
        if isinstance(a.get("agent_id"), str) and a["agent_id"] != s.agent_id and isinstance(a.get("status"), str)
    }
    if statuses:
        with store.write():
            store.note_statuses(statuses, now)
