"""`check` and `wait`: poll, let Tier 0 handle what code can, lease what needs the agent, talk
to the hub after the commit (auto-replies, the ack of the finished prefix), prune. `run_check`
is the one pipeline for a poll, the watch's pushed frames and the store alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..delivery import AutoReply, CheckPlan, batch_keys, hub_prefix, plan_check
from ..errors import (
    AgentComError,
    AuthError,
    BusyError,
    HubProtocolError,
    HubUnavailableError,
    PossiblyDelivered,
    StateError,
    UsageError,
)
from ..groups import ROOM_RING, RoomRead, plan_room_read, read_room_entries, room_since
from ..message import ROOM, MailboxBatch, Unreadable
from ..render import ago
from ..store import MessageStore
from ..tier0 import DISPOSITIONS, auto_reply_payload
from ..watchstate import read_status
from .common import check_limit, forget_unused_state, hub_client, open_store, resolve_settings, unconfirmed_id
from .hazards import connected_hazard, watch_connected, watch_warnings

if TYPE_CHECKING:
    from .common import Hub


AGENTS_CHECK_INTERVAL = 300.0  # seconds between looks at /api/agents for the "connected" hazard
HUB_CONTACT_EVERY = 60.0  # seconds: how stale the recorded last hub contact may get
PRUNE_BUDGET = 0.2  # seconds of pruning steps one check spends, after its output


def check(
    limit: int | None = None,
    peek: bool = False,
    *,
    emit: Callable[[dict[str, Any]], None] | None = None,
    settings: Settings | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Poll the mailbox, let Tier 0 handle what code can, and return what needs the agent.

    `emit`, when given, is called with the result before the delivery is confirmed in the
    store (the CLI prints there): a run killed before its output does not count as shown.
    """
    s = resolve_settings(settings, overrides)
    if limit is not None:
        check_limit(limit)
    else:  # one check returns a page, never the whole backlog (its cost is what it returns)
        limit = s.check_max
    made_here = not s.agent_state_dir().exists()
    try:
        with open_store(s) as store:
            watch = read_status(s.agent_state_dir())
            if watch is not None:
                store.warnings.extend(watch_warnings(watch))
                if watch_connected(watch):
                    # The connected watch holds everything the hub sent: serve from the store alone.
                    return run_check(None, store, s, limit=limit, peek=peek, now=time.time(), emit=emit)
            with hub_client(s) as hub:
                try:
                    return run_check(hub, store, s, limit=limit, peek=peek, now=time.time(), emit=emit)
                except HubUnavailableError as exc:
                    return _check_offline(store, s, limit, peek, exc, emit)
    except (HubUnavailableError, HubProtocolError, AuthError):
        if made_here:  # the first contact failed: no folder for a hub or id that may be a typo
            forget_unused_state(s.agent_state_dir())
        raise


def _check_offline(
    store: MessageStore,
    s: Settings,
    limit: int | None,
    peek: bool,
    exc: HubUnavailableError,
    emit: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    """The hub cannot be reached: deliver what the store holds (pushed messages, defers and
    leases that came due), with a warning saying since when. With nothing to deliver, the
    hub's error stands (exit 4)."""
    now = time.time()
    last = store.get_number("hub_ok_at")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last))
    since = f"last reached {when}, {ago(last, now)}" if last else "never reached from here"
    store.warnings.append(f"the hub is unreachable ({since}): {exc}; delivering what is kept here")

    def emit_found(result: dict[str, Any]) -> None:
        if result["messages"] and emit is not None:
            emit(result)

    result = run_check(None, store, s, limit=limit, peek=peek, now=now, emit=emit_found)
    if not result["messages"]:
        raise exc
    return result


def run_check(
    hub: Hub | None,
    store: MessageStore,
    s: Settings,
    *,
    limit: int | None,
    now: float,
    peek: bool = False,
    emit: Callable[[dict[str, Any]], None] | None = None,
    via: str = "poll",
    agents_check: bool = True,
    batch: MailboxBatch | None = None,
    prune: bool = True,
    on_complete_poll: Callable[[list[str]], None] | None = None,
) -> dict[str, Any]:
    """`check` on a given hub and store (the property tests drive this with a model hub;
    the watch with the frames it is pushed). With `hub` None, nothing is asked of the hub:
    the store alone is served (a live watch keeps it complete). `batch`: the mailbox as the
    caller just polled it (`ack`), so it is not asked for twice. `limit`: how many to return
    (None: every one due; 0: none, the intake of the watch's drain); `now`: the clock, passed in.

    A first look reads one snapshot: when the mailbox holds nothing new and nothing is due
    (the idle heartbeat), the run writes nothing. Otherwise everything is decided afresh
    inside one write transaction, committed (leases, auto-reply intents), and only then
    does the run talk to the hub again.
    """
    if batch is None:
        batch = hub.poll(s.agent_id, 0) if hub is not None else MailboxBatch([], 0)
    agents_check = agents_check and hub is not None
    room, batch = _with_room(hub, store, batch) if via == "poll" else (None, batch)
    ids = batch_keys(batch)
    refs = [m.reply_to for m in batch.messages if m.reply_to] + [m.id for m in batch.messages if m.to == ROOM]
    room_moved = room is not None and _room_cursor(store) != (room[0].cursor, room[0].cursor_key)
    with store.snapshot():
        view = store.view(ids, now, limit, refs)
        finished = store.finished(ids)
        agents_due = agents_check and _agents_check_due(store, now)
        contact_due = hub is not None and _hub_contact_due(store, now)
        aged_out = store.get_number("aged_out") > 0  # dead-lettered by pruning: said by a writing run
    has_new = any(i not in view.known for i in ids)
    plan = plan_check(batch, view, s, now, limit) if peek or not has_new else None
    idle = plan is not None and not (
        plan.changes
        or plan.replies
        or agents_due
        or contact_due
        or aged_out
        or room_moved
        or hub_prefix(batch, finished) is not None
    )
    if plan is not None and (peek or idle):
        result = _check_result(s, plan, store.take_warnings() + plan.warnings)
        if emit:
            emit(result)
        return result

    with store.write():
        view = store.view(ids, now, limit, refs)
        plan = plan_check(batch, view, s, now, limit)
        at_hub = {m.id: m for m in batch.messages}
        store.fill_bodies([at_hub[o.id] for o in view.open if o.msg is None and o.id in at_hub], now)
        store.apply_check(plan, now, via)
        if seq_restarted(batch, store.get_meta("hub_acked")):  # what `status` says was acked
            store.set_meta("hub_acked", None)
        store.take_aged_out()
        agents_due = agents_check and _agents_check_due(store, now)
        status_text = current_status(store, s)
        if agents_due:
            store.set_meta("agents_checked_at", now)
        if hub is not None:
            store.set_meta("hub_ok_at", now)
        if room is not None:  # with the room's messages it read: a crash before this reads them again
            store.set_meta("room_cursor", room[0].cursor)
            store.set_meta("room_cursor_key", room[0].cursor_key)
    # Committed: leases and auto-reply intents are on disk before anything is sent or
    # returned, so a crash never answers a ping twice. Failures from here on are warnings:
    # the caller still gets what was leased.
    warnings = store.take_warnings() + plan.warnings
    sent: list[tuple[AutoReply, dict[str, Any], str]] = []
    up_to = None
    if hub is not None:  # (without a hub the batch was empty: nothing to answer or ack)
        sent, up_to = _answer_and_ack(hub, store, s, plan, batch, status_text, agents_due, warnings)
    result = _check_result(s, plan, warnings)
    if emit:
        emit(result)
    _confirm(store, plan, sent, up_to, now)
    if hub is not None and via == "poll" and batch.complete:
        # Only after reading the whole mailbox: `ids` is then everything the hub holds, which
        # pruning must keep (a finished message behind an unfinished one is still there, and
        # would come back as new). Pushed frames and the store alone say nothing about it.
        _after_whole_mailbox(store, s, ids, now, prune, on_complete_poll)
    return result


def _after_whole_mailbox(
    store: MessageStore,
    s: Settings,
    ids: list[str],
    now: float,
    prune: bool,
    on_complete_poll: Callable[[list[str]], None] | None,
) -> None:
    if on_complete_poll is not None:
        on_complete_poll(ids)
    if prune:  # after the output: never in the check's latency
        prune_store(store, s, ids, now, PRUNE_BUDGET)


def _with_room(
    hub: Hub | None, store: MessageStore, batch: MailboxBatch
) -> tuple[tuple[RoomRead, list[Unreadable]] | None, MailboxBatch]:
    """The room's new messages (when this agent joined it) put before the mailbox's (its
    cursor is the last seq), and the room as read; a room that cannot be read is a warning."""
    room, room_warnings = _read_room(hub, store)
    store.warnings.extend(room_warnings)
    if room is not None and (room[0].messages or room[1]):
        read, unreadable = room
        batch = batch._replace(messages=[*read.messages, *batch.messages], unreadable=(*batch.unreadable, *unreadable))
    return room, batch


def _confirm(
    store: MessageStore,
    plan: CheckPlan,
    sent: list[tuple[AutoReply, dict[str, Any], str]],
    up_to: int | None,
    now: float,
) -> None:
    """After the output: what was printed is shown (so `ack` may finish it), and what was sent
    and acked at the hub is recorded."""
    with store.write():
        store.confirm_shown([m["id"] for m in plan.messages])
        for reply, payload, sent_id in sent:
            store.record_reply_sent(reply.reply_to, sent_id)
            if sent_id != TOKEN_REFUSED:
                store.record_sent(sent_id, reply.to, "response", payload, reply.reply_to, "auto_reply", now)
        if up_to is not None:
            store.set_meta("hub_acked", up_to)


def _room_cursor(store: MessageStore) -> tuple[int, str | None]:
    key = store.get_meta("room_cursor_key")
    return int(store.get_number("room_cursor")), key if isinstance(key, str) else None


def _read_room(hub: Any, store: MessageStore) -> tuple[tuple[RoomRead, list[Unreadable]] | None, list[str]]:
    """What the room holds since our cursor, when this agent joined it (protocol 1.8): read
    with a limit of the whole ring, so the hub's newest-first quirk loses nothing; a restart of
    the hub (its seq went back) is read again from the start. A room that cannot be read is a
    warning: the mailbox's messages go on."""
    if hub is None or not hasattr(hub, "room_messages") or ROOM not in store.groups():
        return None, []
    cursor, key = _room_cursor(store)
    try:
        readable, unreadable, last = read_room_entries(hub.room_messages(room_since(cursor), ROOM_RING))
        read = plan_room_read(readable, last, cursor, key)
        if read.again:
            readable, unreadable, last = read_room_entries(hub.room_messages(0, ROOM_RING))
            read = plan_room_read(readable, last, cursor, key, from_start=True)
    except AgentComError as exc:
        return None, [f"could not read the room (tried again at the next check): {exc}"]
    return (read, unreadable), read.warnings


def prune_store(store: MessageStore, s: Settings, keep: Sequence[str], now: float, budget: float) -> tuple[int, int]:
    """Pruning steps (each one short transaction) for up to `budget` seconds, when a pass is
    due; the pass goes on at the next call until it finds nothing left. Returns (rows changed,
    messages dead-lettered because they were pending beyond open_max_days: they stay listed
    in `inbox --state dead` and counted by `status`)."""
    give_up_at = time.monotonic() + budget
    changed = aged = 0
    try:
        while store.prune_due(now):
            with store.write():
                gone, dead = store.prune_step(keep, now, s.retention_days, s.retention_max, s.open_max_days)
            free = store.vacuum_step()
            changed, aged = changed + gone + dead, aged + dead
            if not (gone or dead or free):
                with store.write():
                    store.set_meta("pruned_at", now)  # the pass is over: the next one in PRUNE_INTERVAL
                break
            if time.monotonic() >= give_up_at:
                break
    except (BusyError, StateError):
        pass  # another run holds the store (or it cannot be written now): the next run goes on
    return changed, aged


def _answer_and_ack(
    hub: Hub,
    store: MessageStore,
    s: Settings,
    plan: CheckPlan,
    batch: MailboxBatch,
    status_text: str,
    agents_due: bool,
    warnings: list[str],
) -> tuple[list[tuple[AutoReply, dict[str, Any], str]], int | None]:
    """After the commit: send the auto-replies, ack the hub's finished prefix, look for another
    connection under our id when due. Failures are warnings (what was leased stands)."""
    if agents_due:
        warnings += connected_hazard(hub, s, store)
    sent = []
    for reply in plan.replies:
        payload = auto_reply_payload(reply.kind, status_text, s.capabilities)
        try:
            sent.append((reply, payload, hub.send(reply.to, "response", payload, reply.reply_to)))
        except PossiblyDelivered as exc:  # counted as sent: an auto-reply is never sent twice
            sent.append((reply, payload, unconfirmed_id()))
            warnings.append(f"a {reply.kind} auto-reply was probably delivered, not confirmed: {exc}")
        except AuthError as exc:  # refused before the hub did anything: sent once the token works again
            sent.append((reply, payload, TOKEN_REFUSED))
            warnings.append(f"could not send a {reply.kind} auto-reply (sent when the token works again): {exc}")
        except AgentComError as exc:
            warnings.append(f"could not send a {reply.kind} auto-reply: {exc}")
    up_to, error = ack_hub_prefix(hub, store, s, batch)
    if error:
        warnings.append(error)
    return sent, up_to


def _check_result(s: Settings, plan: CheckPlan, warnings: list[str]) -> dict[str, Any]:
    return {
        "agent_id": s.agent_id,
        "messages": plan.messages,
        "handled": {k: plan.handled.get(k, 0) for k in DISPOSITIONS},
        "pending": plan.pending,
        "in_lease": plan.in_lease,
        "next_due": plan.next_due,
        "warnings": warnings,
    }


def ack_hub_prefix(hub: Hub, store: MessageStore, s: Settings, batch: MailboxBatch) -> tuple[int | None, str | None]:
    """Ack the hub up to the finished prefix of `batch`: (the seq acked or None, a warning or None)."""
    up_to = hub_prefix(batch, store.finished(batch_keys(batch)))
    if up_to is None:
        return None, None
    try:
        hub.ack(s.agent_id, up_to)
    except AgentComError as exc:
        return None, f"could not ack the hub (it will be retried): {exc}"
    return up_to, None


def seq_restarted(batch: MailboxBatch, hub_acked: Any) -> bool:
    """Whether the hub's seq counter started again since we acked up to `hub_acked`: the hub
    drops what is acked, so a mailbox whose last seq is below that ack holds only messages
    numbered afresh (an empty mailbox tells nothing)."""
    return (
        bool(batch.messages)
        and isinstance(hub_acked, int)
        and not isinstance(hub_acked, bool)
        and batch.last_seq < hub_acked
    )


def current_status(store: MessageStore, s: Settings) -> str:
    """This agent's status: the last `agentcom status set`, else the configured one."""
    return str(store.get_meta("status") or s.status)


def _hub_contact_due(store: MessageStore, now: float) -> bool:
    """Whether this run should record that it reached the hub (what "last reached" says when
    it is down): at most every HUB_CONTACT_EVERY seconds, so an idle check rarely writes."""
    return not 0 <= now - store.get_number("hub_ok_at") < HUB_CONTACT_EVERY


def _agents_check_due(store: MessageStore, now: float) -> bool:
    return now - store.get_number("agents_checked_at") >= AGENTS_CHECK_INTERVAL


TOKEN_REFUSED = "refused:token"  # an auto-reply intent the hub refused for our token: to be sent later
REFUSED_RETRY_WINDOW = 3600.0  # seconds: older refused auto-replies are stale answers, never sent


def send_refused_auto_replies(hub: Hub, store: MessageStore, s: Settings, now: float) -> tuple[int, list[str]]:
    """Send the auto-replies the hub refused because of our token (once it takes a token
    again): how many went out, and warnings. Each intent is still sent at most once."""
    status_text = current_status(store, s)
    done, warnings = 0, []
    for message_id, recipient, kind in store.refused_auto_replies(TOKEN_REFUSED, now - REFUSED_RETRY_WINDOW):
        payload = auto_reply_payload(kind, status_text, s.capabilities)
        try:
            sent_id = hub.send(recipient, "response", payload, message_id)
        except PossiblyDelivered:
            sent_id = unconfirmed_id()
        except AgentComError as exc:
            warnings.append(f"could not send a refused {kind} auto-reply yet: {exc}")
            break
        with store.write():
            store.record_reply_sent(message_id, sent_id)
            store.record_sent(sent_id, recipient, "response", payload, message_id, "auto_reply", now)
        done += 1
    return done, warnings


MAX_TIMEOUT = 31_536_000  # a year of waiting; inf and nan would overflow the clock


def _check_wait(timeout: Any, limit: Any) -> None:
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout <= MAX_TIMEOUT
    ):
        raise UsageError(f"timeout must be a number of seconds from 0 to {MAX_TIMEOUT:,} (none: wait for good)")
    if limit is not None:
        check_limit(limit)


def wait(
    timeout: float | None = None,
    limit: int | None = None,
    *,
    emit: Callable[[dict[str, Any]], None] | None = None,
    settings: Settings | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    **overrides: Any,
) -> dict[str, Any] | None:
    """Block until something needs attention and return it like `check` (None at the timeout).

    With a connected watch only the local store is read (the watch keeps it complete);
    otherwise the hub is polled, backing off from 1 s to 30 s between looks.
    """
    s = resolve_settings(settings, overrides)
    _check_wait(timeout, limit)
    limit = s.check_max if limit is None else limit
    give_up_at = None if timeout is None else clock() + timeout
    delay = 1.0
    said: list[str] = []  # warnings of the looks that found nothing: they come with the result

    def emit_found(result: dict[str, Any]) -> None:
        if result["messages"]:
            result["warnings"][:0] = [w for w in said if w not in result["warnings"]]
            if emit is not None:
                emit(result)

    with open_store(s) as store:
        while True:
            now = clock()
            if watch_connected(read_status(s.agent_state_dir())):
                result = (
                    run_check(None, store, s, limit=limit, now=now, emit=emit_found)
                    if store.deliverable_count(now)
                    else None
                )
                delay = 0.25
            else:
                with hub_client(s) as hub:
                    try:
                        result = run_check(hub, store, s, limit=limit, now=now, emit=emit_found)
                    except HubUnavailableError as exc:  # what the store holds, as check does; else exit 4
                        result = _check_offline(store, s, limit, False, exc, emit_found)
            if result is not None and result["messages"]:
                return result
            if result is not None:
                said += [w for w in result["warnings"] if w not in said]
            left = None if give_up_at is None else give_up_at - clock()
            if left is not None and left <= 0:
                return None
            sleep(delay if left is None else min(delay, left))
            if delay < 30:
                delay = min(30.0, delay * 2)
