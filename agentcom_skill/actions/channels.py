"""Channels and the room: `join`, `leave`, `channels`."""

from __future__ import annotations

import time
from typing import Any

from ..config import Settings
from ..errors import UsageError
from ..groups import group_address, read_room_entries
from ..message import ROOM
from ..tier0 import ATTEND
from .common import hub_client, open_store, resolve_settings


def join(
    where: str,
    create: bool = False,
    description: str | None = None,
    attend: str = "mentions",
    *,
    settings: Settings | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Join a channel (`#name`: subscribed at the hub, made first with `create`) or the room
    (`@room`: local, the hub has no such call; read from its newest message on). `attend`: what
    of it needs the agent (mentions of `@agent_id` and replies to ours, all, or none)."""
    s = resolve_settings(settings, overrides)
    address = group_address(where)
    if attend not in ATTEND:
        raise UsageError(f"attend must be one of {', '.join(ATTEND)}")
    if address.kind == "room" and (create or description is not None):
        raise UsageError("the room always exists: --create and --description are for channels")
    warnings: list[str] = []
    created = False
    cursor: tuple[int, str | None] | None = None
    with hub_client(s) as hub:
        if address.kind == "channel":
            if create:
                created = hub.create_channel(address.channel, description)
                if not created:
                    warnings.append(f"{address.name} existed already: joined it")
            hub.subscribe(address.channel)
        else:
            readable, _, last = read_room_entries(hub.room_messages(0, 1))
            cursor = (readable[-1].payload["room_seq"], readable[-1].id) if readable else (0, None)
    with open_store(s) as store, store.write():
        joined_before = address.name in store.groups()
        store.join_group(address.name, attend, time.time())
        if cursor is not None and not joined_before:
            store.set_meta("room_cursor", cursor[0])
            store.set_meta("room_cursor_key", cursor[1])
        warnings += store.take_warnings()
    return {"joined": address.name, "created": created, "attend": attend, "warnings": warnings}


def leave(where: str, *, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Leave a channel (unsubscribed at the hub) or the room; what was kept of it stays, and
    nothing new from it is kept."""
    s = resolve_settings(settings, overrides)
    address = group_address(where)
    warnings: list[str] = []
    if address.kind == "channel":
        with hub_client(s) as hub:
            try:
                hub.subscribe(address.channel, on=False)
            except UsageError as exc:  # no such channel at the hub (any more): left all the same
                warnings.append(str(exc))
    with open_store(s) as store, store.write():
        was_joined = store.leave_group(address.name)
        warnings += store.take_warnings()
    if not was_joined:
        warnings.append(f"{address.name} was not joined here")
    return {"left": address.name, "warnings": warnings}


def channels(*, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """The hub's channels (each with its subscriber count, whether we joined it and what of
    it needs us), and the room."""
    s = resolve_settings(settings, overrides)
    with hub_client(s) as hub:
        listed = hub.channels()
    with open_store(s) as store:
        joined = store.groups()
        warnings = store.take_warnings()
    entries = []
    for item in sorted(listed, key=lambda c: str(c.get("name"))):
        name = "#" + str(item.get("name"))
        entries.append(
            {
                "name": name,
                "description": item.get("description"),
                "subscribers": item.get("subscriber_count"),
                "joined": name in joined,
                "attend": joined.get(name),
                "untrusted": True,
            }
        )
    listed_names = {e["name"] for e in entries}
    for name in sorted(set(joined) - listed_names - {ROOM}):
        warnings.append(f"{name} is joined here but the hub no longer lists it")
    entries.append(
        {
            "name": ROOM,
            "description": "the hub's room",
            "subscribers": None,
            "joined": ROOM in joined,
            "attend": joined.get(ROOM),
            "untrusted": False,
        }
    )
    return {"agent_id": s.agent_id, "channels": entries, "warnings": warnings}
