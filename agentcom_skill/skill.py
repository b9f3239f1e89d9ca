"""The skill's actions: thin compositions of config, message store, hub client and Tier 0.

Each returns a plain JSON-serialisable dict, the same the CLI prints with `--json`.
No transaction is ever held across the network: decide and commit, talk to the hub,
commit the outcome.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .a2a_tasks import A2ATasks
from .config import (
    ENV_VARS,
    Settings,
    check_agent_id,
    check_hub_url,
    default_config_path,
    keep_previous,
    load_settings,
    mask_token,
    write_config_file,
)
from .delivery import (
    FINISHED_STATES,
    OPEN_STATES,
    STATES,
    AutoReply,
    CheckPlan,
    batch_keys,
    bounded_due,
    hub_prefix,
    message_view,
    plan_check,
)
from .errors import (
    AgentComError,
    AuthError,
    BusyError,
    ConfigError,
    HubProtocolError,
    HubUnavailableError,
    PossiblyDelivered,
    StateError,
    UsageError,
)
from .groups import (
    ROOM_RING,
    Address,
    RoomRead,
    group_address,
    parse_address,
    plan_room_read,
    read_room_entries,
    room_key,
    room_since,
)
from .legacy import has_state_file, import_state_file
from .message import PRIORITIES, RESPOND_WITH, ROOM, MailboxBatch, Message, Unreadable, payload_text
from .render import ago, safe_field, safe_sender, safe_type
from .store import AMBIGUOUS_SHOWN, AmbiguousRef, IdPrefix, MessageStore, row_dict, row_message
from .tier0 import ATTEND, DISPOSITIONS, auto_reply_payload, mentions
from .watchstate import read_status, watch_alive

if TYPE_CHECKING:  # for annotations only: the network client loads when a command talks to the hub
    from .client import HubClient

    class Hub(Protocol):
        """What the actions ask of a hub: `HubClient`, or a stand-in (the watch's pushed frames,
        the property tests' model hub)."""

        def poll(self, agent_id: str, since: int = 0) -> MailboxBatch: ...

        def send(
            self, to: str | None, type_: str | None, payload: dict[str, Any], reply_to: str | None = None
        ) -> str: ...

        def ack(self, agent_id: str, seq: int) -> int: ...

        def agents(self) -> list[dict[str, Any]]: ...


AGENTS_CHECK_INTERVAL = 300.0  # seconds between looks at /api/agents for the "connected" hazard
HUB_CONTACT_EVERY = 60.0  # seconds: how stale the recorded last hub contact may get
PRUNE_BUDGET = 0.2  # seconds of pruning steps one check spends, after its output
THREAD_LIMIT = 200
_MSG_ID = r"^[0-9a-f]{16}$"  # patterns as text: re compiles (and caches) them when first used


def _say_waiting(text: str) -> None:
    import logging  # only when a run has to wait for another: not on the common path

    logging.getLogger("agentcom").warning(text)


def resolve_settings(settings: Settings | None, overrides: Mapping[str, Any]) -> Settings:
    if settings is not None:
        if overrides:
            raise UsageError("pass either settings or setting overrides, not both")
        return settings
    return load_settings(overrides, source_name="a keyword argument")


def hub_client(settings: Settings) -> HubClient:
    from .client import HubClient  # imported only when the hub is used

    return HubClient(
        settings.hub_url,
        settings.token,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        deadline=settings.request_deadline,
        max_response_bytes=settings.max_response_bytes,
        ca_bundle=settings.ca_bundle,
        token_source=settings.sources.get("token", ""),
        url_source=settings.sources.get("hub_url", ""),
    )


STORE_FILES = ("messages.sqlite3", "messages.sqlite3-wal", "messages.sqlite3-shm", "messages.sqlite3-journal")


def forget_unused_state(directory: Path) -> None:
    """Remove an agent's state folder this run made for a hub it never reached (a mistyped
    hub_url or agent id): only the empty store's files, then the folder if nothing else is
    in it. Anything else there, or any error, leaves it as it is."""
    for name in STORE_FILES:
        try:
            (directory / name).unlink()
        except FileNotFoundError:
            pass
        except OSError:
            return
    try:
        directory.rmdir()
    except OSError:
        pass


def open_store(settings: Settings) -> MessageStore:
    """The agent's message store, with 0.1's state.json imported into it the first time."""
    directory = settings.agent_state_dir()
    store = MessageStore.open(directory, settings.lock_timeout, on_wait=_say_waiting)
    if has_state_file(directory):
        try:
            import_state_file(store, directory, settings.lock_timeout)
        except BaseException:
            store.close()
            raise
    return store


MAX_SEQ = 2**63 - 1  # SQLite's integers: a larger number names no message
_HEX_REF = r"^[0-9a-f]{4,16}$"
_SET_ASIDE_KEY = r"^unreadable-(seq-\d{1,19}|[0-9a-f]{16})$"  # message.Unreadable.key
REF_RULE = "its seq (a number), its id (16 hex digits) or a unique id prefix (at least 4 hex digits)"


def parse_ref(ref: Any) -> int | str:
    """A message reference: an int is a seq; a string is a seq (`12`, `#12`), an id, or an id
    prefix of at least 4 hex digits (any case).

    An all-digit string of 4 or more digits is ambiguous on its face: it stays a string, and
    `MessageStore.resolve` reads it as a seq when a kept message has that seq, else as an id
    prefix. `#` forces a seq; 1-3 digits are always a seq (too short for a prefix)."""
    if isinstance(ref, bool):
        raise UsageError(f"a message is named by {REF_RULE}")
    if isinstance(ref, int):
        if not 0 <= ref <= MAX_SEQ:
            raise UsageError(f"seq {str(ref)[:24]} names no message: a seq is a number from 0 to {MAX_SEQ}")
        return ref
    if isinstance(ref, str):
        text = ref.strip()
        forced_seq = text.startswith("#")
        text = text.lstrip("#") if forced_seq else text
        if text.isascii() and text.isdigit() and (forced_seq or len(text) < 4):
            return parse_ref(int(text))
        # Kept in its case: a hub may choose ids that differ only in case (the store matches
        # the exact id first, then any case).
        if not forced_seq and re.fullmatch(_HEX_REF, text.lower()):
            return text
        if re.fullmatch(_SET_ASIDE_KEY, text.lower()):  # a poison record whose id could not be read
            return text.lower()
    raise UsageError(f"{str(ref)[:40]!r} names no message: give {REF_RULE}")


# check ------------------------------------------------------------------------


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
        _check_limit(limit)
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
                    return run_check(None, store, s, limit, peek, time.time(), emit)
            with hub_client(s) as hub:
                try:
                    return run_check(hub, store, s, limit, peek, time.time(), emit)
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

    result = run_check(None, store, s, limit, peek, now, emit_found)
    if not result["messages"]:
        raise exc
    return result


def run_check(
    hub: Hub | None,
    store: MessageStore,
    s: Settings,
    limit: int | None,
    peek: bool,
    now: float,
    emit: Callable[[dict[str, Any]], None] | None = None,
    *,
    via: str = "poll",
    agents_check: bool = True,
    batch: MailboxBatch | None = None,
    prune: bool = True,
    on_complete_poll: Callable[[list[str]], None] | None = None,
) -> dict[str, Any]:
    """`check` on a given hub and store (the property tests drive this with a model hub;
    the watch with the frames it is pushed). With `hub` None, nothing is asked of the hub:
    the store alone is served (a live watch keeps it complete). `batch`: the mailbox as the
    caller just polled it (`ack`), so it is not asked for twice.

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
        warnings += _connected_hazard(hub, s, store)
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


def current_status(store: MessageStore, s: Settings) -> str:
    """This agent's status: the last `agentcom status set`, else the configured one."""
    return str(store.get_meta("status") or s.status)


def _hub_contact_due(store: MessageStore, now: float) -> bool:
    """Whether this run should record that it reached the hub (what "last reached" says when
    it is down): at most every HUB_CONTACT_EVERY seconds, so an idle check rarely writes."""
    return not 0 <= now - store.get_number("hub_ok_at") < HUB_CONTACT_EVERY


def _agents_check_due(store: MessageStore, now: float) -> bool:
    return now - store.get_number("agents_checked_at") >= AGENTS_CHECK_INTERVAL


def _connected_hazard(hub: Hub, s: Settings, store: MessageStore | None = None) -> list[str]:
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


# finishing messages ---------------------------------------------------------------


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
    named = _refs(refs, ids)
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
        targets, already = _resolve_refs(store, refs, need_shown=True)
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
            run_check(hub, store, s, 0, False, now, agents_check=False, batch=batch)
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
    named = _refs(refs, ids, required_for="defer")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 366 * 86400:
        raise UsageError("defer time must be between 1 second and a year")
    now = time.time()
    with open_store(s) as store, store.write():
        targets, already = _resolve_refs(store, named, need_shown=True)
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
    named = _refs(refs, ids, required_for="dismiss")
    with open_store(s) as store, store.write():
        targets, already = _resolve_refs(store, named, need_shown=False)
        store.finish([r["id"] for r in targets], "dismissed", time.time(), "dismissed by the agent")
    return {
        "agent_id": s.agent_id,
        "dismissed": [{"id": r["id"], "seq": r["seq"]} for r in targets],
        "already_finished": [{"id": r["id"], "seq": r["seq"]} for r in already],
    }


def _refs(refs: Any, ids: Iterable[str], required_for: str | None = None) -> list[int | str]:
    """The messages named (seqs, ids, id prefixes); with `required_for`, naming none is an error."""
    if refs is None:
        items: list[Any] = []
    elif isinstance(refs, (int, str)):
        items = [refs]
    else:
        items = list(refs)
    if isinstance(ids, str):
        ids = [ids]
    refs = [parse_ref(x) for x in items]
    for i in ids:
        ref = parse_ref(i) if isinstance(i, str) and not i.strip().startswith("#") else None
        if not isinstance(ref, str):
            raise UsageError(
                f"{str(i)[:40]!r} is not a message id: give its 16 hex digits or a unique prefix of at least 4"
            )
        refs.append(IdPrefix(ref))  # named as an id: never read as a seq
    if required_for and not refs:
        raise UsageError(f"name the message(s) to {required_for} by seq or id")
    return refs


def _resolve_refs(store: MessageStore, refs: Sequence[int | str], need_shown: bool) -> tuple[list[Any], list[Any]]:
    """The open messages `refs` name and those already finished; UsageError (nothing changed) otherwise."""
    targets, already, seen = [], [], set()
    for ref in refs:
        row = store.resolve(ref)
        label = _ref_label(ref)
        if row is None or row["disposition"] != "attention":
            raise UsageError(
                f"no message with {label} was returned by check here; nothing was changed (see `agentcom inbox`)"
            )
        if row["id"] in seen:
            continue
        seen.add(row["id"])
        if row["state"] in FINISHED_STATES:
            already.append(row)
        elif need_shown and not row["ever_shown"]:
            raise UsageError(
                f"message {label} was never shown to the agent; run `agentcom check` first. Nothing was changed"
            )
        else:
            targets.append(row)
    return targets, already


# sending ----------------------------------------------------------------------


def send(
    to: str,
    text: str | None = None,
    type: str | None = None,  # noqa: A002 - the protocol's field name
    reply_to: str | None = None,
    payload: Mapping[str, Any] | None = None,
    *,
    priority: str | None = None,
    needs: Iterable[str] = (),
    respond_with: str | None = None,
    settings: Settings | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Send a direct message (`to` an agent id), a broadcast (`to="broadcast"`, any case),
    publish in a channel (`to="#name"`) or post in the room (`to="@room"`, its text only)."""
    s = resolve_settings(settings, overrides)
    address = parse_address(to)
    body = _message_body(text, payload, priority, needs, respond_with)
    for name, value in (("type", type), ("reply_to", reply_to)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise UsageError(f"{name} must be a non-empty string")
    if address.kind in ("channel", "room"):
        return _say_in_group(s, address, type, body, reply_to, "send", [])
    to, warnings = _recipient(to, s.agent_id)
    known_anyway = to in ("broadcast", s.agent_id)
    return _send_and_record(s, to, type, body, reply_to, "send", warnings, check_known=not known_anyway)


def _recipient(to: Any, me: str) -> tuple[str, list[str]]:
    """The recipient as the hub reads it (`broadcast` in any case is everyone), and warnings."""
    if not isinstance(to, str) or not to.strip():
        raise UsageError("to must be an agent id or 'broadcast'")
    to = to.strip()
    if to.casefold() == "broadcast":
        return "broadcast", [] if to == "broadcast" else [f"sending to everyone: {to!r} is read as broadcast"]
    if to == me:
        return to, ["sending to yourself: your own check drops it as an echo"]
    return to, []


def _message_body(text: Any, payload: Any, priority: Any, needs: Any, respond_with: Any) -> dict[str, Any]:
    """A message's payload from the text and the fields a sender may set (docs/messages.md)."""
    if payload is not None and not isinstance(payload, Mapping):
        raise UsageError("payload must be a JSON object")
    body = dict(payload or {})
    if text is not None:
        if not isinstance(text, str):
            raise UsageError("text must be a string")
        if text.strip():
            body["text"] = text
    if priority is not None:
        if priority not in PRIORITIES:
            raise UsageError(f"priority must be one of {', '.join(PRIORITIES)}")
        body["priority"] = priority
    needs = [needs] if isinstance(needs, str) else list(needs)
    if needs:
        body["needed_capabilities"] = needs
    if respond_with is not None:
        if respond_with not in RESPOND_WITH:
            raise UsageError(f"respond_with must be one of {', '.join(RESPOND_WITH)}")
        body["respond_with"] = respond_with
    if payload is None and not body.get("text"):
        raise UsageError("the message is empty: give a text (argument, - for stdin, or --text-file) or a payload")
    return body


def _send_and_record(
    s: Settings,
    to: str,
    type_: str | None,
    body: dict[str, Any],
    reply_to: str | None,
    kind: str,
    warnings: list[str],
    check_known: bool = False,
) -> dict[str, Any]:
    """Send, then record in the local history. With `check_known`, warn (after sending) when
    nobody knows the recipient: never heard from here, and not connected to the hub."""
    with hub_client(s) as hub:
        try:
            msg_id = hub.send(to, type_, body, reply_to)
        except PossiblyDelivered as exc:
            # Never sent again on its own: a retry would be a duplicate if the hub took it.
            msg_id = unconfirmed_id()
            warnings.append(f"probably delivered, not confirmed: {exc}")
        if check_known:
            warnings += _unknown_recipient(hub, s, to)
    try:
        with open_store(s) as store, store.write():
            store.record_sent(msg_id, to, type_, body, reply_to, kind, time.time())
    except AgentComError as exc:  # sent all the same: say so rather than fail
        warnings.append(f"sent, but not recorded in the local history: {exc}")
    return {
        "id": msg_id,
        "to": to,
        "type": type_ or "chat",
        "reply_to": reply_to,
        "confirmed": is_confirmed(msg_id),
        "warnings": warnings,
    }


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


def _say_in_group(
    s: Settings,
    address: Address,
    type_: str | None,
    body: dict[str, Any],
    reply_to: str | None,
    kind: str,
    warnings: list[str],
) -> dict[str, Any]:
    """Publish in a channel or post in the room, then record it as sent (by the message's id
    in a channel, by its key in the room: a reply to it, or our own post read back, is known)."""
    if address.kind == "room" and (set(body) != {"text"} or reply_to is not None or type_ is not None):
        raise UsageError("the room takes a text only (no payload fields, type or reply_to)")
    with hub_client(s) as hub:
        try:
            msg_id = say_in_group(hub, address, type_, body, reply_to, warnings)
        except PossiblyDelivered as exc:
            msg_id = unconfirmed_id()
            warnings.append(f"probably delivered, not confirmed: {exc}")
    try:
        with open_store(s) as store, store.write():
            store.record_sent(msg_id, address.name, type_, body, reply_to, kind, time.time())
            if address.name not in store.groups():
                warnings.append(f"said in {address.name}, which this agent has not joined: answers there are not read")
    except AgentComError as exc:
        warnings.append(f"sent, but not recorded in the local history: {exc}")
    return {
        "id": msg_id,
        "to": address.name,
        "channel": address.name,
        "type": type_ or "chat",
        "reply_to": reply_to,
        "confirmed": is_confirmed(msg_id),
        "warnings": warnings,
    }


def say_in_group(
    hub: Any,  # a HubClient (the A2A dispatcher's is typed as the narrower Hub)
    address: Address,
    type_: str | None,
    body: dict[str, Any],
    reply_to: str | None,
    warnings: list[str],
) -> str:
    """Publish in a channel or post in the room (its text only): the id to record it under
    (in the room, the key its message gets when read back)."""
    if address.kind == "room":
        return room_key(hub.room_post(str(body.get("text") or "")))
    return _publish(hub, address.channel, type_, body, reply_to, warnings)


def _publish(
    hub: HubClient, channel: str, type_: str | None, body: dict[str, Any], reply_to: str | None, warnings: list[str]
) -> str:
    """Publish and find the message's id: the hub answers with the channel's seq only, so the
    id is read from the channel's history (kept, a reply to it is then recognised as one)."""
    seq = hub.publish(channel, type_, body, reply_to)
    try:
        for entry in hub.channel_history(channel, seq - 1, 200):
            message = entry.get("message")
            if entry.get("seq") == seq and isinstance(message, dict) and isinstance(message.get("id"), str):
                return str(message["id"])
    except AgentComError as exc:
        warnings.append(f"published, but its id could not be read from the channel's history: {exc}")
        return unconfirmed_id()
    warnings.append("published, but its id was not in the channel's history")
    return unconfirmed_id()


UNCONFIRMED = "unconfirmed-"


def unconfirmed_id() -> str:
    """The local key of a send the hub probably took but whose id never came back."""
    import secrets

    return UNCONFIRMED + secrets.token_hex(8)


def is_confirmed(sent_id: str) -> bool:
    return not sent_id.startswith(UNCONFIRMED)


def _unknown_recipient(hub: Hub, s: Settings, to: str) -> list[str]:
    """A note when `to` never wrote to us, was never sent to from here before, and is not
    among the agents the hub lists as connected; none otherwise. The hub's list is read only
    when needed.

    The note never calls the id a typo: the real hub answers the same for an agent that only
    polls its mailbox as for an id nobody registered (`/api/agents` and
    `/api/agents/:id/state` know connected agents only), so all it can say is that the agent
    is not connected and gets the message when it polls."""
    try:
        with open_store(s) as store:
            if store.peers().get(to) is not None or store.messages(sender=to, limit=1) or store.sent_to(to):
                return []
    except AgentComError:
        pass  # no usable store: the hub's list alone decides
    try:
        if any(a.get("agent_id") == to for a in hub.agents()):
            return []
    except AgentComError as exc:
        return [
            f"sent, but {safe_sender(to)} never wrote to us and the hub's agent list could not be read ({exc}): "
            "check the agent id"
        ]
    return [
        f"sent; {safe_sender(to)} is not connected to the hub and has not written to us: it gets the message "
        "when it polls its mailbox (the hub cannot tell an agent that only polls from an id nobody uses, "
        "so check the id if it is new to you)"
    ]


def reply(ref: int | str, text: str, *, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Answer a stored message (by seq or id) where it was said: a response to its sender,
    reply_to its id; in its channel (reply_to its id); in the room (naming its claimed sender).

    Addressed from the local copy (guarantee 11), so it works after an ack and cannot go
    to another sender when the hub reuses a seq.
    """
    s = resolve_settings(settings, overrides)
    if not isinstance(text, str) or not text.strip():
        raise UsageError("the reply is empty: give a text")
    parsed = parse_ref(ref)
    row, warnings = _stored_row(s, parsed)
    msg = row_message(row)
    if msg is None:
        raise _not_kept(parsed)
    where = msg.channel
    if where == ROOM:
        # Named when the claimed name is a plain one (any text may be claimed; never repeated raw).
        plain = re.match(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$", msg.sender) is not None
        said = text if not plain or mentions(text, msg.sender) else f"@{msg.sender} {text}"
        return _say_in_group(s, parse_address(ROOM), None, {"text": said}, None, "reply", warnings)
    if where is not None:
        return _say_in_group(s, parse_address(where), "response", {"text": text}, msg.id, "reply", warnings)
    return _send_and_record(s, msg.sender, "response", {"text": text}, msg.id, "reply", warnings)


def _stored_row(s: Settings, ref: int | str, need_body: bool = True) -> tuple[Any, list[str]]:
    """The stored message a seq or id names (with its body, unless `need_body` is False: a
    poison record keeps only what could be read of it), and the store's warnings; UsageError
    when none is kept (saying why when its row was damaged)."""
    with open_store(s) as store:
        row = store.resolve(ref)
        warnings = store.take_warnings()
    if row is None or (need_body and row_message(row) is None):
        raise _not_kept(ref, warnings)
    return row, warnings


def _ref_label(ref: int | str) -> str:
    if isinstance(ref, int):
        return f"seq {ref}"
    if len(ref) >= 16:
        return f"id {safe_field(ref, _MSG_ID)}"
    if ref.isdigit() and not ref.startswith("0") and not isinstance(ref, IdPrefix):
        return f"seq or id prefix {ref}"
    return f"id prefix {ref}"


def _not_kept(ref: int | str, warnings: Sequence[str] = ()) -> UsageError:
    why = "".join(f"; {w}" for w in warnings)
    return UsageError(f"no message with {_ref_label(ref)} is kept here (see `agentcom inbox`){why}")


# channels and the room -----------------------------------------------------------


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


# reading ----------------------------------------------------------------------


def show(ref: int | str, *, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """One stored message in full, with its state; changes nothing."""
    s = resolve_settings(settings, overrides)
    row, warnings = _stored_row(s, parse_ref(ref), need_body=False)
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
    _check_limit(limit)
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
    _check_limit(limit)
    if not isinstance(text, str) or not text.strip():
        raise UsageError("give something to search for")
    with open_store(s) as store:
        rows = store.search(text.strip(), limit)
        warnings = store.take_warnings()
    return {"agent_id": s.agent_id, "query": text, "messages": [history_entry(r) for r in rows], "warnings": warnings}


def sent(limit: int = 20, *, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Messages this agent sent (send, reply, auto-replies), newest first."""
    s = resolve_settings(settings, overrides)
    _check_limit(limit)
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
                raise _not_kept(parsed)
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


MAX_LIMIT = 1_000_000  # the most messages one call returns (a larger number is a mistake, not a wish)
MAX_TIMEOUT = 31_536_000  # a year of waiting; inf and nan would overflow the clock


def _check_limit(limit: Any) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"limit must be a whole number from 1 to {MAX_LIMIT:,}")


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
                hazards += _connected_hazard(hub, s)
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
    sent = _send_and_record(s, "broadcast", "status", {"status": text}, None, "send", [])
    return {"agent_id": s.agent_id, "status": text, "via": "broadcast", "id": sent["id"], "warnings": sent["warnings"]}


def _check_wait(timeout: Any, limit: Any) -> None:
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout <= MAX_TIMEOUT
    ):
        raise UsageError(f"timeout must be a number of seconds from 0 to {MAX_TIMEOUT:,} (none: wait for good)")
    if limit is not None:
        _check_limit(limit)


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
                    run_check(None, store, s, limit, False, now, emit_found) if store.deliverable_count(now) else None
                )
                delay = 0.25
            else:
                with hub_client(s) as hub:
                    try:
                        result = run_check(hub, store, s, limit, False, now, emit_found)
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


def ping(
    agent: str,
    timeout: float = 10.0,
    *,
    settings: Settings | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    **overrides: Any,
) -> dict[str, Any]:
    """Send `agent` a ping and wait up to `timeout` seconds for its pong (a `response` with
    payload.action pong, reply_to the ping). `pong_id` is None at the timeout.

    Waiting takes nothing from the agent: the mailbox is taken in as the watch's drain does
    (Tier 0 files the pong; attention messages are stored, never leased or shown), and with a
    live watch only the store is read (the watch files the pong as it is pushed).
    """
    s = resolve_settings(settings, overrides)
    if not isinstance(agent, str) or not agent.strip():
        raise UsageError("ping needs an agent id")
    agent = agent.strip()
    if agent.casefold() == "broadcast" or agent == s.agent_id:
        raise UsageError("ping one other agent by its id (not broadcast, not yourself)")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 86400:
        raise UsageError("the ping timeout must be between 0 and 86400 seconds")
    give_up_at = clock() + timeout
    from .client import HubClient  # noqa: F401 - loaded before the clock starts: the round trip is the hub's, not an import's

    sent_at = time.time()
    sent = _send_and_record(s, agent, "ping", {"action": "ping"}, None, "send", [], check_known=True)
    result = {
        "agent": agent,
        "ping_id": sent["id"],
        "pong_id": None,
        "round_trip": None,
        "status": None,
        "timeout": float(timeout),
        "warnings": sent["warnings"],
    }
    started, delay = clock(), PONG_LOOK_INTERVAL
    with open_store(s) as store, hub_client(s) as hub:
        while True:
            if not watch_connected(read_status(s.agent_state_dir())):
                run_check(hub, store, s, 0, False, time.time(), agents_check=False)
            pong = _pong(store, sent["id"], agent)
            if pong is not None:
                status = pong.payload.get("status")
                row = store.resolve(pong.id)
                received_at = row["received_at"] if row is not None else time.time()
                result.update(
                    pong_id=pong.id,
                    round_trip=max(0.0, received_at - sent_at),
                    status=status if isinstance(status, str) else None,
                )
                return result
            left = give_up_at - clock()
            if left <= 0:
                result["warnings"] += _not_listening(hub, agent)
                return result
            sleep(min(delay, left))
            if clock() - started >= PONG_CLOSE_LOOKS:  # a live peer has answered by now: back off
                delay = min(1.0, delay * 2)


# How `ping` looks for its pong: every PONG_LOOK_INTERVAL seconds for the first PONG_CLOSE_LOOKS
# seconds (a peer's watch answers within a few hundred ms, and without our own watch the round
# trip is measured when a look finds the pong), then backing off to one look a second.
PONG_LOOK_INTERVAL = 0.05
PONG_CLOSE_LOOKS = 2.0


def _not_listening(hub: Hub, agent: str) -> list[str]:
    """Why no pong came, when the hub can say: `agent` holds no WebSocket (no watch), so only
    its own next `check` will answer (Tier 0 does, in code)."""
    try:
        if any(a.get("agent_id") == agent for a in hub.agents()):
            return []
    except AgentComError:
        return []
    return [
        f"{safe_sender(agent)} is not connected to the hub (no `agentcom watch` runs for it): it answers the ping"
        " at its next `agentcom check`, and the pong then waits in your mailbox"
    ]


def _pong(store: MessageStore, ping_id: str, agent: str) -> Message | None:
    for row in store.replies_to([ping_id]):
        msg = row_message(row)
        if msg is not None and msg.sender == agent and msg.action == "pong":
            return msg
    return None


def agents(*, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Agents connected to the hub by WebSocket (the hub lists no others). Their statuses are
    noted in the peers' roster `log` shows."""
    s = resolve_settings(settings, overrides)
    with hub_client(s) as hub:
        listed = hub.agents()
    with contextlib.suppress(AgentComError), open_store(s) as store:
        note_listed_statuses(store, s, listed, time.time())
    return {"agents": listed}


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


def log(
    disposition: str | None = None, limit: int = 50, *, settings: Settings | None = None, **overrides: Any
) -> dict[str, Any]:
    """What Tier 0 handled and why (oldest first), peers' latest statuses, and dead letters."""
    s = resolve_settings(settings, overrides)
    if disposition is not None and disposition not in DISPOSITIONS:
        raise UsageError(f"disposition must be one of {', '.join(DISPOSITIONS)}")
    _check_limit(limit)
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


def token_way_out(agent_id: str, give_it: str) -> str:
    """What to do when the hub knows this id but we hold no working token for it: a hub gives a
    token once, at registration, so another comes from whoever runs the hub. `give_it` says
    where the token goes."""
    return (
        f"{give_it}, with the token {agent_id} was given or one from the hub's operator; for a local hub"
        f" (`agentcom hub serve`), `agentcom hub token {agent_id} --db HUB.DB > FILE` mints one"
    )


def init_config(
    overrides: Mapping[str, Any],
    *,
    register: bool = False,
    capabilities: str | None = None,
    ignore_from: str | None = None,
    status: str | None = None,
    force: bool = False,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write a config file from the given settings; with `register`, get a token from the hub
    first. With `force` over an existing file, its other settings are kept: the result names
    the file, the settings kept from the old one and those dropped."""
    env = os.environ if env is None else env
    path = overrides.get("config") or env.get(ENV_VARS["config"]) or default_config_path()
    values: dict[str, Any] = {
        "hub_url": overrides.get("hub_url") or env.get(ENV_VARS["hub_url"]),
        "agent_id": overrides.get("agent_id") or env.get(ENV_VARS["agent_id"]),
    }
    for name in ("hub_url", "agent_id"):
        if not values[name]:
            raise ConfigError(f"{name} is needed: pass --{name.replace('_', '-')} or set {ENV_VARS[name]}")
    values["hub_url"] = check_hub_url(str(values["hub_url"]), "--hub-url")
    values["agent_id"] = check_agent_id(str(values["agent_id"]), "--agent-id")
    if Path(path).expanduser().exists() and not force:
        raise ConfigError(f"config file {path} already exists (use --force to overwrite it)")
    if register:
        from .client import HubClient

        with HubClient(values["hub_url"], None) as hub:
            try:
                values["token"] = hub.register(values["agent_id"])["token"]
            except ConfigError as exc:  # the hub's 409: the id is taken, and the hub never gives its token twice
                give_it = "write the config with `agentcom config init ... --token-file FILE` instead of --register"
                raise ConfigError(f"{exc}; {token_way_out(values['agent_id'], give_it)}") from None
    elif overrides.get("token_file") or env.get(ENV_VARS["token_file"]):
        values["token_file"] = os.path.abspath(overrides.get("token_file") or env[ENV_VARS["token_file"]])
    state_dir = overrides.get("state_dir") or env.get(ENV_VARS["state_dir"])
    if state_dir:
        values["state_dir"] = os.path.abspath(os.path.expanduser(str(state_dir)))
    if capabilities is not None:
        values["capabilities"] = [c.strip() for c in capabilities.split(",") if c.strip()]
    if ignore_from is not None:
        values["ignore_from"] = [c.strip() for c in ignore_from.split(",") if c.strip()]
    if status is not None:
        values["status"] = status
    kept: list[str] = []
    dropped: list[str] = []
    if force and Path(path).expanduser().exists():  # keep what the new values do not replace
        values, kept, dropped = keep_previous(Path(path).expanduser(), values)
    write_config_file(Path(path).expanduser(), values, force=force)
    return {"path": str(path), "kept": kept, "dropped": dropped}


__all__ = [
    "check",
    "ack",
    "defer",
    "dismiss",
    "send",
    "reply",
    "show",
    "inbox",
    "search",
    "sent",
    "thread",
    "status",
    "set_status",
    "wait",
    "agents",
    "log",
    "ping",
    "init_config",
    "OPEN_STATES",
]
