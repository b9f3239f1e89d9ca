"""`agentcom watch`: hold the hub's WebSocket, apply Tier 0 as messages arrive, wake the agent.

One process per agent (an exclusive lock; a second exits 7). On every (re)connect it
identifies, then drains the mailbox by HTTP (what arrived while disconnected). Each pushed
frame is committed to the store, with its Tier 0 disposition, before anything acts on it
(guarantee 10): the same `run_check` pipeline as `check`, fed the frame instead of a poll.
The watch keeps the socket and the intake; the agent is woken from a thread of its own
(`wakethread.py`, which drives `hookwake.py` or `a2a/`), and what the hub says about our
identity (another connection under our id, a refused token) is `watchhazards.py`.

The WebSocket client is the `websockets` library's synchronous one, imported only here.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .actions.check import current_status, run_check
from .actions.common import hub_client, open_store
from .actions.hazards import note_listed_statuses
from .config import Settings
from .errors import (
    AgentComError,
    AuthError,
    BusyError,
    HubProtocolError,
    HubUnavailableError,
    NoSuchRoute,
    StateError,
)
from .groups import group_of, pushed_group_message
from .message import MailboxBatch, Message, Unreadable, decode_frame, pushed_message, task_notice
from .render import where_said
from .untrusted import neutralise, safe_msg_id, safe_sender
from .wakethread import WakeThread
from .watchhazards import HubHazards
from .watchstate import StatusBoard, hold_watch_lock, lock_holder

if TYPE_CHECKING:
    from .actions.common import Hub

RECONNECT_MAX = 60.0
FRAME_BATCH = 500  # pushed frames committed in one transaction at most
# A pushed frame may be as large as the largest body the hub takes (8 MB), and a hub that
# escapes every non-ASCII character as \uXXXX makes it up to three times that. A frame over
# this limit closes the connection (1009) and its message, which the hub did not store, is lost.
MAX_FRAME = 32 * 1024 * 1024
# The first sweep of the mailbox after connecting: a message the hub routed just before our
# identify but stored just after the drain read the mailbox would otherwise wait there (unseen
# by `check`, which trusts a connected watch) until the next reconnect.
FIRST_SWEEP = 2.0
TOKEN_CHECK_INTERVAL = 15.0  # seconds (at most) between looks at whether the hub still takes our token
SWEEP_RETRY = 30.0  # after a sweep (or the drain) could not read the mailbox
STOP_DRAIN = 2.0  # seconds a stopping watch goes on reading frames that keep coming, before it closes
FRAME_QUEUE = 1024  # frames the socket reader may hold before it stops reading (backpressure)


class Events:
    """One line per event on stderr, starting with the time (UTC, ISO 8601: a log kept with
    `2> watch.log` says when); with `jsonl`, one JSON object per event on stdout."""

    def __init__(
        self, jsonl: bool = False, out: Any = None, err: Any = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.jsonl = jsonl
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.clock = clock
        self.last: dict[str, Any] | None = None

    def __call__(self, kind: str, text: str, **fields: Any) -> None:
        at = self.clock()
        self.last = {"event": kind, "at": at, "text": text, **fields}
        try:
            print(f"{log_time(at)} agentcom watch: {neutralise(text)}", file=self.err, flush=True)
            if self.jsonl:
                print(json.dumps(self.last, ensure_ascii=True), file=self.out, flush=True)
        except (OSError, ValueError):
            pass


def log_time(at: float) -> str:
    """2026-12-07T06:30:15.123Z"""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"


def how_closed(exc: ConnectionClosed) -> str:
    """Who closed the socket, with the code (1009: a frame over MAX_FRAME) and the reason."""
    ours = exc.sent is not None and (exc.rcvd is None or exc.rcvd_then_sent is False)
    close = exc.sent if ours else exc.rcvd
    if close is None:
        return "it dropped without a close frame"
    reason = f" {close.reason[:80]!r}" if close.reason else ""
    return f"{'this watch' if ours else 'the hub'} closed it (code {close.code}{reason})"


class PushedFrames:
    """The hub as `run_check` sees it when the messages were pushed: the poll serves the frames
    read from the socket; sending (auto-replies) goes to the real hub."""

    def __init__(self, hub: Hub, batch: MailboxBatch):
        self.hub, self.batch = hub, batch

    def poll(self, agent_id: str, since: int = 0) -> MailboxBatch:
        return self.batch

    def send(self, to: str | None, type_: str | None, payload: dict[str, Any], reply_to: str | None = None) -> str:
        return self.hub.send(to, type_, payload, reply_to)

    def ack(self, agent_id: str, seq: int) -> int:  # pushed messages have no seq: never reached
        return self.hub.ack(agent_id, seq)

    def agents(self) -> list[dict[str, Any]]:
        return self.hub.agents()


PARENT_POLL = 0.5  # seconds between two looks at whether the parent process is still there


class Watch:
    def __init__(
        self,
        settings: Settings,
        events: Events,
        clock: Callable[[], float] = time.time,
        reload: Callable[[], Settings] | None = None,
        parent_pid: int | None = None,
    ):
        self.s = settings
        self.reload = reload  # loads the settings again (SIGHUP)
        self.reload_requested = False
        self.parent_pid = parent_pid  # stop when our parent is no longer this process (it died)
        self.events = events
        self.clock = clock
        self.directory = settings.agent_state_dir()
        self.stopping = False
        wake = settings.wake
        self.status: dict[str, Any] = {
            "pid": os.getpid(),
            "started_at": clock(),
            "connected_since": None,
            "last_event": None,
            "last_event_at": None,
            "wakes_sent": 0,
            "reconnects": 0,
            "messages_received": 0,
            "hazards": [],
            "wake_mode": wake.mode if wake.configured else None,
            "last_wake_error": None,
        }
        self.board = StatusBoard(self.directory, self.status, events, lambda: self.clock())
        self.hazards: HubHazards  # built in run(), on the socket's hub client
        self.wakes: WakeThread  # built in run(), with its own store connection and hub client
        self.rejoin = False  # the hub sent agent_left for our id: identify again
        self.rejoin_why = ""
        self.history_usable = True  # the hub answers GET /api/messages (to tell broadcasts apart)
        self.declines: list[dict[str, Any]] = []  # task_assign frames to decline
        self.listening: set[str] = set()  # the joined channels the hub pushes this connection
        self.announced_status: str | None = None
        self.arrived = threading.Event()  # set when a message is taken in: the wake thread looks at once
        # Pushed, not yet committed (the store failed). Bounded: the first store that fails
        # closes the socket and no other is opened until these are stored, so this holds at most
        # what one connection had read by then (FRAME_BATCH, FRAME_QUEUE and the close's last
        # frames); the hub keeps everything after it in the mailbox.
        self.unstored: list[Message | Unreadable] = []
        self.at_hub: tuple[str, ...] | None = None  # ids in the last whole mailbox read (pruning keeps them)
        self.retry_store_at = 0.0
        self.store_failures = 0
        self.store_error: AgentComError | None = None

    # the process --------------------------------------------------------------

    def run(self) -> int:
        lock = hold_watch_lock(self.directory)
        if lock is None:
            pid = lock_holder(self.directory)
            raise BusyError(
                f"another agentcom watch{f' (pid {pid})' if pid else ''} runs for {self.s.agent_id}"
                f" (lock {self.directory / 'watch.lock'}): stop it first, or leave it running"
            )
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        if self.reload is not None:
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._hang_up)
        if self.parent_pid is not None:
            threading.Thread(target=self._watch_parent, name="agentcom-parent", daemon=True).start()
        try:
            with (
                open_store(self.s) as store,
                open_store(self.s) as wake_store,
                hub_client(self.s) as hub,
                hub_client(self.s) as wake_hub,
            ):
                self.store, self.hub = store, hub
                self.hazards = HubHazards(self.s, store, hub, self.board, self.clock, wake_hub.use_token)
                self.wakes = WakeThread(
                    self.s, wake_store, wake_hub, self.board, self.clock, self.reload, self.arrived, lambda: self.at_hub
                )
                self.wakes.reload_requested = self.reload_requested  # a SIGHUP before it was there
                self.wakes.start()
                # Wakes run beside the socket loop (with their own store connection and hub
                # client), so a slow gateway never holds up pings or incoming frames.
                waker = threading.Thread(
                    target=self.wakes.run, args=(lambda: self.stopping,), name="agentcom-wake", daemon=True
                )
                waker.start()
                try:
                    return self._loop()
                finally:
                    self.stopping = True
                    waker.join(timeout=self.wakes.s.wake.timeout + 5)
                    self.wakes.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(lock)

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _watch_parent(self) -> None:
        """A parent killed hard (the OpenClaw gateway, SIGKILL) cannot stop us: we notice that
        we were handed to another parent and stop as if told to, so the lock is free for the
        next parent's watch."""
        while not self.stopping:
            if os.getppid() != self.parent_pid:
                self._event("parent_gone", f"the parent process {self.parent_pid} is gone: stopping")
                self.stopping = True
                return
            time.sleep(PARENT_POLL)

    def _hang_up(self, signum: int, frame: Any) -> None:
        # Only a flag: the wake thread, which owns the waker, reloads within 0.2 s. (Setting
        # an Event here could deadlock on its lock, held by the code this handler interrupted.)
        self.reload_requested = True
        wakes = getattr(self, "wakes", None)
        if wakes is not None:
            wakes.reload_requested = True

    def _loop(self) -> int:
        attempt, code = 0, 0
        while not self.stopping:
            identified = False
            try:
                identified = self._session()
            except AuthError as exc:
                self._event("auth", f"the hub refused us: {exc}; not retrying")
                code = 3
                break
            except AgentComError as exc:
                self._event("error", f"{exc}")
            except (OSError, TimeoutError) as exc:
                self._event("disconnected", f"connection failed: {type(exc).__name__}: {exc}")
            except Exception as exc:  # the websockets library's own errors
                self._event("disconnected", f"connection lost: {type(exc).__name__}")
            self.status["connected_since"] = None
            if self.stopping:
                break
            attempt = 0 if identified else attempt + 1
            delay = random.uniform(0, min(RECONNECT_MAX, 2.0**attempt))  # full jitter
            self.status["reconnects"] += 1
            self._event("reconnecting", f"reconnecting in {delay:.1f} s")
            give_up_at = time.monotonic() + delay
            # Wakes go on meanwhile. Messages a failing store could not take are retried, and no
            # connection is opened until they are stored: the hub keeps what follows meanwhile.
            while not self.stopping and (time.monotonic() < give_up_at or self.unstored):
                self._take_in()
                time.sleep(0.2 if self.unstored else min(0.2, max(0.0, give_up_at - time.monotonic())))
        if self.unstored:  # a last try before exiting
            self.retry_store_at = 0.0
            self._take_in()
        if self.unstored:
            return self._give_up_unstored()
        self._event("stopped", "stopped")
        return code

    def _give_up_unstored(self) -> int:
        """Stopping with pushed messages the store never took (the hub no longer has them): each
        goes to stderr in full, one JSON line, for a person to recover; the exit is not 0."""
        held = list(self.unstored)
        error = self.store_error or StateError("the message store could not take them")
        for item in held:
            if isinstance(item, Message):
                line: dict[str, Any] = {"event": "unstored_message", "message": item.to_json()}
            else:
                line = {"event": "unstored_message", "unreadable": item._asdict()}
            try:
                print(json.dumps(line, ensure_ascii=True), file=self.events.err, flush=True)
            except (OSError, ValueError):
                pass
        self._event(
            "stopped",
            f"STOPPED WITH {len(held)} PUSHED MESSAGE(S) NOT STORED (the store failed: {error}); the hub no longer"
            ' has them: each is on stderr above, one JSON line {"event": "unstored_message", ...}; exit'
            f" {error.exit_code}",
        )
        return error.exit_code

    # one connection -----------------------------------------------------------

    def _session(self) -> bool:
        """Connect, identify, drain, then handle frames until the connection ends.
        True when it got as far as identified (the reconnect backoff starts over)."""
        url = self.s.hub_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/ws"
        with connect(
            url,
            open_timeout=10,
            ping_interval=None,
            close_timeout=2,
            proxy=None,
            max_size=MAX_FRAME,
            max_queue=FRAME_QUEUE,
        ) as ws:
            status = current_status(self.store, self.s)
            already_listed = self.hazards.presence() is not None  # another connection under our id, before us
            self.rejoin = False
            ws.send(
                json.dumps(
                    {
                        "type": "identify",
                        "agent_id": self.s.agent_id,
                        "token": self.hazards.token,
                        "name": self.s.agent_id,
                        "status": status,
                        "capabilities": list(self.s.capabilities),
                        "client_type": "sidecar",
                        "protocol_version": 1,
                    }
                )
            )
            reply, _ = decode_frame(ws.recv(timeout=15))
            if reply.get("type") == "error" and reply.get("error") in ("invalid_token", "token_agent_mismatch"):
                raise AuthError(f"{reply['error']} (the token from {self.s.sources.get('token', 'the settings')})")
            if reply.get("type") != "identified":
                raise HubProtocolError(f"hub answered identify with {str(reply.get('type'))[:40]!r}")
            self.announced_status = status
            self.status["connected_since"] = self.clock()
            self._event("connected", f"connected to {url} as {self.s.agent_id}")
            self.hazards.connected(already_listed)
            # The hub pushes a socket the channels its agent had joined when it identified:
            # one joined later (over HTTP) is pushed only after a reconnect (protocol 1.8).
            self.listening = self._joined_channels()
            try:
                self._drain()  # (failing, it is tried again by the first sweep, 2 s on)
                self._converse(ws)
            finally:
                # However the connection ends, the frames already read are kept first; then the
                # close handshake, during which the hub still pushes what it sent before it saw
                # our Close: those are kept too.
                # Stopping, a stream that never pauses is read for STOP_DRAIN seconds at most,
                # then the close: what the hub sent before it saw it is still read and kept.
                self._keep_unread(ws, time.monotonic() + STOP_DRAIN if self.stopping else None)
                ws.close()
                self._keep_unread(ws)
            return True

    def _keep_unread(self, ws: Any, until: float | None = None) -> None:
        while frames := self._receive(ws, wait=0)[0]:
            self._on_frames(frames)
            if until is not None and time.monotonic() >= until:
                return

    def _converse(self, ws: Any) -> None:
        """Read frames and ping until the connection ends or the watch stops."""
        interval, patience = self.s.watch_ping_interval, self.s.watch_pong_timeout
        next_ping, awaiting_pong_since = time.monotonic() + interval, None
        sweep_every = self.s.watch_sweep_interval
        next_sweep = time.monotonic() + min(FIRST_SWEEP, sweep_every)
        token_every = min(TOKEN_CHECK_INTERVAL, interval)
        next_token_check = time.monotonic() + token_every
        while not self.stopping:
            frames, closed = self._receive(ws, wait=0.2)
            if frames:
                # Any frame is a sign of life: a hub pushing us a burst answers our ping
                # only after the frames queued before it.
                awaiting_pong_since = None
            self._on_frames(frames)  # also retries messages a failing store could not take
            self._decline_tasks(ws)
            if self.unstored:
                self._event(
                    "disconnected",
                    "the store cannot take pushed messages: closing the connection, so the hub keeps what follows in"
                    " the mailbox; connecting again once what was read is stored",
                )
                return
            if closed:
                self._event("disconnected", f"connection closed: {closed}")
                return
            if self.rejoin:
                self._event("disconnected", self.rejoin_why)
                return
            mono = time.monotonic()
            if awaiting_pong_since is not None and mono - awaiting_pong_since > patience:
                self._event("disconnected", f"no pong within {patience:g} s: the connection is dead")
                return
            if mono >= next_sweep:
                swept = self._drain(sweep=True)
                next_sweep = time.monotonic() + (sweep_every if swept else min(SWEEP_RETRY, sweep_every))
            if mono >= next_token_check:
                self.hazards.check_token()
                next_token_check = time.monotonic() + token_every
            if mono >= next_ping:
                ws.send(json.dumps({"type": "ping"}))
                next_ping = mono + interval
                if awaiting_pong_since is None:
                    awaiting_pong_since = mono
                self.hazards.check_presence()
                joined = self._joined_channels() - self.listening
                if joined:
                    self._event(
                        "disconnected",
                        f"joined {len(joined)} channel(s) since connecting: reconnecting, so the hub pushes them here",
                    )
                    return
            self._announce_status(ws)

    def _joined_groups(self) -> dict[str, str] | None:
        """The channels and the room joined; None when the store cannot say (keep everything)."""
        try:
            return self.store.groups()
        except AgentComError:
            return None

    def _joined_channels(self) -> set[str]:
        try:
            return {name for name in self.store.groups() if name.startswith("#")}
        except AgentComError:
            return set(self.listening)

    @staticmethod
    def _receive(ws: Any, wait: float) -> tuple[list[str | bytes], str | None]:
        """The frames that have arrived (waiting up to `wait` s for a first one), at most
        FRAME_BATCH; and, when the connection has ended (after these frames), how."""
        frames: list[str | bytes] = []
        try:
            frames.append(ws.recv(timeout=wait))
            while len(frames) < FRAME_BATCH:
                frames.append(ws.recv(timeout=0))
        except TimeoutError:
            pass
        except ConnectionClosed as exc:
            return frames, how_closed(exc)
        return frames, None

    def _on_frames(self, frames: list[str | bytes]) -> None:
        """Pushed messages are kept (in one transaction for all of them) before anything acts
        on them; other frames are reported."""
        joined: dict[str, str] | None = None
        for raw in frames:
            frame, problem = decode_frame(raw)
            kind = frame.get("type")
            if kind == "message":
                self.unstored.append(pushed_message(frame, self.s.agent_id, raw, problem))
            elif kind == "task_assign":
                # The hub takes every identified socket for a worker of its task queue. Never
                # hold a task silently: keep a notice of it, then decline at once (below), so
                # the hub gives it to another agent instead of waiting 60 s and flagging us.
                self.unstored.append(task_notice(frame, self.s.agent_id, raw))
                self.declines.append(frame)
            elif kind in ("channel_message", "room_message"):
                if joined is None:
                    joined = self._joined_groups()
                if joined is not None and group_of(frame) not in joined:
                    continue  # the room (pushed to every agent) or a channel left: not ours to keep
                self.unstored.append(pushed_group_message(frame, raw, problem))
            else:
                self._on_notice(kind, frame)
        self._take_in()

    def _on_notice(self, kind: Any, frame: dict[str, Any]) -> None:
        """A frame that carries no message: presence, the hub's errors and acks."""
        if kind == "task_ack":
            self._event("task", f"the hub took our answer on task {neutralise(str(frame.get('task_id')))[:80]}")
        elif kind == "agent_left" and frame.get("agent_id") == self.s.agent_id:
            self.rejoin = True  # the hub no longer lists us: until we identify again, it stores our messages
            self.rejoin_why = (
                "the hub dropped our listing (another connection under our id closed):"
                " reconnecting, so direct messages come here again"
            )
        elif kind in ("agent_joined", "status_changed") and isinstance(frame.get("agent"), dict):
            self._note_status(frame["agent"])
        elif kind == "error":
            self._event("hub_error", f"hub error: {neutralise(str(frame.get('error')))[:100]}")
            if str(frame.get("error")).startswith("task_fail_failed"):
                # A task pushed outside the hub's queue cannot be failed: the hub keeps us
                # "working" on it, so no task ever comes again. A new connection starts its
                # worker state afresh (what arrives meanwhile waits in the mailbox).
                self.rejoin = True
                self.rejoin_why = "the hub keeps us busy with a task it cannot take back: reconnecting"
        elif kind == "rate_limited":
            self._event("rate_limited", f"hub rate-limits us ({str(frame.get('retry_after_ms'))[:20]} ms)")

    def _note_status(self, agent: dict[str, Any]) -> None:
        """A peer's status as the hub pushes it (set over its WebSocket, it reaches no mailbox):
        into the roster `log` shows. A presence, not a message: a store too busy now skips it."""
        try:
            note_listed_statuses(self.store, self.s, [agent], self.clock())
        except AgentComError as exc:
            self._event("warning", f"could not note a peer's status: {exc}", persist=False)

    def _drain(self, sweep: bool = False) -> bool:
        """What arrived while we were not connected waits in the mailbox: take it in by HTTP.
        A sweep (the same, while connected) says something only when it found something.
        False when the mailbox could not be read (the socket stays up: pushes keep coming,
        and the next sweep tries again)."""
        # Counted as ids, not as a difference of counts: the wake thread leases messages meanwhile
        # (a difference went negative).
        before = set(self.store.deliverable_ids(self.clock()))
        try:
            result = run_check(
                self.hub,
                self.store,
                self.s,
                limit=0,
                now=self.clock(),
                agents_check=False,
                prune=False,  # the wake thread prunes, off the socket's path
                on_complete_poll=self._note_at_hub,
            )
        except AuthError as exc:  # the socket still brings pushes: keep it, say so everywhere
            self.hazards.token_refused(exc)
            return False
        except (HubUnavailableError, HubProtocolError) as exc:
            self._event("warning", f"could not read the mailbox (tried again soon): {exc}")
            return False
        handled = sum(result["handled"].values())
        new = len(set(self.store.deliverable_ids(self.clock())) - before)
        if not sweep:
            self._event("drained", f"mailbox drained: {new} new need attention, {handled} handled by Tier 0")
        elif new or handled:
            self._event(
                "swept",
                f"mailbox swept: {new} new need attention, {handled} handled by Tier 0"
                " (stored by the hub instead of pushed)",
            )
            self.arrived.set()
        for warning in result["warnings"]:
            self._event("warning", warning)
        return True

    def _note_at_hub(self, ids: list[str]) -> None:
        """What the hub holds (a whole mailbox read): pruning keeps these."""
        self.at_hub = tuple(ids)

    def _take_in(self) -> None:
        """Commit the pushed messages not yet stored, with their Tier 0 decisions, then send the
        auto-replies. A store that cannot take them now (disk full, busy) keeps them here, in
        memory, for the next try: a frame that reached this process is never dropped."""
        if not self.unstored:
            return
        if self.clock() < self.retry_store_at:
            return
        taken = list(self.unstored)
        readable = self._addressed([m for m in taken if isinstance(m, Message)])
        batch = MailboxBatch(readable, 0, unreadable=tuple(m for m in taken if isinstance(m, Unreadable)))
        try:
            result = run_check(
                PushedFrames(self.hub, batch),
                self.store,
                self.s,
                limit=0,
                now=self.clock(),
                via="push",
                agents_check=False,
            )
        except AgentComError as exc:
            self.store_failures += 1
            self.store_error = exc
            delay = min(30.0, 2.0 ** (self.store_failures - 1))
            self.retry_store_at = self.clock() + delay
            self._event(
                "store_failed",
                f"could not store {len(taken)} pushed message(s), kept in memory and retried in {delay:g} s: {exc}",
            )
            return
        del self.unstored[: len(taken)]
        self.retry_store_at = 0.0
        self.store_failures, self.store_error = 0, None
        self.status["messages_received"] += len(taken)
        rows = {r["id"]: r for r in self.store.messages(ids=[m.id for m in readable], limit=len(readable) or 1)}
        for msg in {m.id: m for m in readable}.values():  # the same id pushed twice is one message
            row = rows.get(msg.id)
            disposition = row["disposition"] if row is not None else "?"
            reason = row["reason"] if row is not None else ""
            self._event(
                "message",
                f"message {safe_msg_id(msg.id)} from {safe_sender(msg.sender)}"
                + (f" in {where_said({'channel': msg.channel})}" if msg.channel else "")
                + ": "
                + ("needs the agent" if disposition == "attention" else f"handled by Tier 0 ({disposition}: {reason})"),
                id=msg.id,
                disposition=disposition,
                persist=False,
            )
        for warning in result["warnings"]:
            self._event("warning", warning, persist=False)
        self._persist_status()
        self.arrived.set()

    def _decline_tasks(self, ws: Any) -> None:
        """Decline the tasks the hub assigned us (their notices are taken in first): accept
        and fail each at once, the only refusal the hub's task protocol has; it puts the task
        back in its queue for another agent."""
        while self.declines:
            frame = self.declines.pop(0)
            task_id = frame.get("task_id")
            if not isinstance(task_id, str):
                continue
            generation = frame.get("generation")
            generation = generation if isinstance(generation, int) and not isinstance(generation, bool) else 0
            ws.send(json.dumps({"type": "task_accepted", "task_id": task_id}))
            ws.send(
                json.dumps(
                    {
                        "type": "task_failed",
                        "task_id": task_id,
                        "generation": generation,
                        "error": f"declined: agentcom agent {self.s.agent_id} does not run hub tasks",
                    }
                )
            )
            self._event("task", f"hub task {neutralise(task_id)[:80]} declined (kept in the log)", task=task_id)

    def _addressed(self, pushed: list[Message]) -> list[Message]:
        """A pushed frame carries no `to`: the hub's message history says which were
        broadcasts (one short look per sender; the frames wait in memory meanwhile, as they do
        for a busy store). Where it cannot tell, the message stays taken as direct, and the
        watch says so once."""
        guessed = [m for m in pushed if m.to is not None and m.timestamp is not None and m.type != "task_assign"]
        if not guessed or not self.history_usable:
            return pushed
        spans: dict[str, list[int]] = {}
        for m in guessed:
            spans.setdefault(m.sender, []).append(int(m.timestamp or 0))
        routed: dict[str, str | None] = {}
        try:
            for sender, times in spans.items():
                # (a margin: a hub whose frames and history disagree on the millisecond)
                routed.update(self.hub.routed(sender, min(times) - 1000, max(times) + 1000))
        except AgentComError as exc:
            if isinstance(exc, NoSuchRoute):  # this hub keeps no history: stop asking
                self.history_usable = False
            self._event(
                "warning",
                f"cannot tell pushed broadcasts from direct messages (taken as direct): {exc}",
            )
            return pushed
        asked = {m.id for m in guessed}
        return [m._replace(to=routed[m.id]) if m.id in asked and m.id in routed else m for m in pushed]

    def _announce_status(self, ws: Any) -> None:
        status = current_status(self.store, self.s)
        if status != self.announced_status:
            ws.send(json.dumps({"type": "status", "status": status}))
            self.announced_status = status
            self._event("status", f"status announced: {status[:80]}")

    # reporting ------------------------------------------------------------------

    def _event(self, kind: str, text: str, persist: bool = True, **fields: Any) -> None:
        self.board.event(kind, text, persist, **fields)

    def _persist_status(self) -> None:
        self.board.persist()


def run_watch(
    settings: Settings,
    jsonl: bool = False,
    reload: Callable[[], Settings] | None = None,
    parent_pid: int | None = None,
) -> int:
    """The CLI's entry: the exit code. `reload` loads the settings again, on SIGHUP."""
    return Watch(settings, Events(jsonl), reload=reload, parent_pid=parent_pid).run()


__all__ = ["Watch", "Events", "run_watch"]
