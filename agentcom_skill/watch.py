"""`agentcom watch`: hold the hub's WebSocket, apply Tier 0 as messages arrive, wake the agent.

One process per agent (an exclusive lock; a second exits 7). On every (re)connect it
identifies, then drains the mailbox by HTTP (what arrived while disconnected). Each pushed
frame is committed to the store, with its Tier 0 disposition, before anything acts on it
(guarantee 10): the same `run_check` pipeline as `check`, fed the frame instead of a poll.
Attention messages are batched into wakes (`wake.py`); a wake counts as a delivery, so
they are leased and shown exactly as if `check` had returned them.

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

from .a2a import A2ADispatcher
from .config import Settings
from .delivery import plan_check
from .errors import AgentComError, AuthError, BusyError, HubProtocolError, HubUnavailableError
from .message import MailboxBatch, Message, Unreadable, decode_frame, pushed_message
from .render import neutralise, render_prompt, safe_msg_id, safe_sender
from .skill import current_status, hub_client, open_store, prune_store, run_check
from .wake import WakeBatcher, Waker, wake_error
from .watchstate import hold_watch_lock, write_status

if TYPE_CHECKING:
    from .skill import Hub

RECONNECT_MAX = 60.0
FIRST_HAZARD = (
    "another connection was identified as {agent} on the hub before this watch: direct messages go to it,"
    " not to this watch (broadcasts go to both); stop it, or stop this watch"
)
LATER_HAZARD = (
    "another connection identified as {agent} on the hub after this watch: direct messages still come to the"
    " first connection (this watch), broadcasts go to both (each gets a copy)"
)
FRAME_BATCH = 500  # pushed frames committed in one transaction at most
# A pushed frame may be as large as the largest body the hub takes (8 MB), and a hub that
# escapes every non-ASCII character as \uXXXX makes it up to three times that. A frame over
# this limit closes the connection (1009) and its message, which the hub did not store, is lost.
MAX_FRAME = 32 * 1024 * 1024
# The first sweep of the mailbox after connecting: a message the hub routed just before our
# identify but stored just after the drain read the mailbox would otherwise wait there (unseen
# by `check`, which trusts a connected watch) until the next reconnect.
FIRST_SWEEP = 2.0
SWEEP_RETRY = 30.0  # after a sweep (or the drain) could not read the mailbox
STOP_DRAIN = 2.0  # seconds a stopping watch goes on reading frames that keep coming, before it closes
FRAME_QUEUE = 1024  # frames the socket reader may hold before it stops reading (backpressure)
WAKE_FOOTER = (
    '[AgentCom] Answer with `agentcom reply SEQ|ID "..."`; when a message is handled, '
    "`agentcom ack SEQ|ID`. Unacked ones come back later."
)


class Events:
    """One line per event on stderr; with `jsonl`, one JSON object per event on stdout."""

    def __init__(self, jsonl: bool = False, out: Any = None, err: Any = None):
        self.jsonl = jsonl
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.last: dict[str, Any] | None = None

    def __call__(self, kind: str, text: str, **fields: Any) -> None:
        self.last = {"event": kind, "at": time.time(), "text": text, **fields}
        try:
            print(f"agentcom watch: {neutralise(text)}", file=self.err, flush=True)
            if self.jsonl:
                print(json.dumps(self.last, ensure_ascii=True), file=self.out, flush=True)
        except (OSError, ValueError):
            pass


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


class Watch:
    def __init__(self, settings: Settings, events: Events, clock: Callable[[], float] = time.time):
        self.s = settings
        self.events = events
        self.clock = clock
        self.directory = settings.agent_state_dir()
        self.stopping = False
        self.batcher = WakeBatcher(settings.wake.window, settings.wake.min_interval)
        wake = settings.wake
        self.waker = Waker(wake) if wake.configured and wake.mode != "a2a" else None
        self.dispatcher: A2ADispatcher | None = None  # in mode a2a, built in run()
        self.wake_paused_until = 0.0
        self.reported_unauthorized = False
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
        self.presence_since: Any = None  # our entry's connected_at in /api/agents
        self.first_hazard: list[str] = []  # another connection under our id was there before us
        self.rejoin = False  # the hub sent agent_left for our id: identify again
        self.announced_status: str | None = None
        self._lock = threading.Lock()  # events and the status file, from the socket and wake threads
        self.arrived = threading.Event()  # set when a message is taken in: the wake thread looks at once
        self.unstored: list[Message | Unreadable] = []  # pushed, not yet committed (the store failed)
        self.at_hub: tuple[str, ...] | None = None  # ids in the last whole mailbox read (pruning keeps them)
        self.retry_store_at = 0.0

    # the process --------------------------------------------------------------

    def run(self) -> int:
        lock = hold_watch_lock(self.directory)
        if lock is None:
            raise BusyError(f"another agentcom watch runs for {self.s.agent_id} (lock {self.directory / 'watch.lock'})")
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            with (
                open_store(self.s) as store,
                open_store(self.s) as wake_store,
                hub_client(self.s) as hub,
                hub_client(self.s) as wake_hub,
            ):
                self.store, self.wake_store, self.hub = store, wake_store, hub
                if self.s.wake.configured and self.s.wake.mode == "a2a":
                    self.dispatcher = A2ADispatcher(self.s, wake_store, wake_hub, self._event, self.clock)
                    self._event(
                        "config",
                        f"A2A mode: conversations go to {self.s.wake.url} as tasks "
                        f"(one context per {self.s.wake.context}); answers come back to the senders",
                    )
                elif not self.waker:
                    self._event("config", "no [wake] configured: messages wait in the store for `agentcom check`")
                # Wakes run beside the socket loop (with their own store connection and hub
                # client), so a slow gateway never holds up pings or incoming frames.
                waker = threading.Thread(target=self._wake_loop, name="agentcom-wake", daemon=True)
                waker.start()
                try:
                    return self._loop()
                finally:
                    self.stopping = True
                    waker.join(timeout=self.s.wake.timeout + 5)
                    if self.dispatcher is not None:
                        self.dispatcher.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(lock)

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _loop(self) -> int:
        attempt = 0
        while not self.stopping:
            identified = False
            try:
                identified = self._session()
            except AuthError as exc:
                self._event("auth", f"the hub refused us: {exc}; not retrying")
                return 3
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
            while not self.stopping and time.monotonic() < give_up_at:  # wakes go on meanwhile
                time.sleep(min(0.2, max(0.0, give_up_at - time.monotonic())))
        if self.unstored:  # a last try before exiting
            self.retry_store_at = 0.0
            self._take_in()
        self._event("stopped", "stopped")
        return 0

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
            already_listed = self._presence() is not None  # another connection under our id, before us
            self.rejoin = False
            ws.send(
                json.dumps(
                    {
                        "type": "identify",
                        "agent_id": self.s.agent_id,
                        "token": self.s.token,
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
            self.presence_since = self._presence()
            self.first_hazard = [FIRST_HAZARD.format(agent=self.s.agent_id)] if already_listed else []
            self._set_hazards(self.first_hazard)
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
        while not self.stopping:
            frames, closed = self._receive(ws, wait=0.2)
            if frames:
                # Any frame is a sign of life: a hub pushing us a burst answers our ping
                # only after the frames queued before it.
                awaiting_pong_since = None
            self._on_frames(frames)  # also retries messages a failing store could not take
            if closed:
                self._event("disconnected", f"connection closed: {closed}")
                return
            if self.rejoin:
                self._event(
                    "disconnected",
                    "the hub dropped our listing (another connection under our id closed):"
                    " reconnecting, so direct messages come here again",
                )
                return
            mono = time.monotonic()
            if awaiting_pong_since is not None and mono - awaiting_pong_since > patience:
                self._event("disconnected", f"no pong within {patience:g} s: the connection is dead")
                return
            if mono >= next_sweep:
                swept = self._drain(sweep=True)
                next_sweep = time.monotonic() + (sweep_every if swept else min(SWEEP_RETRY, sweep_every))
            if mono >= next_ping:
                ws.send(json.dumps({"type": "ping"}))
                next_ping = mono + interval
                if awaiting_pong_since is None:
                    awaiting_pong_since = mono
                self._check_presence()
            self._announce_status(ws)

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

    def _presence(self) -> Any:
        """Our entry in the hub's list of connected agents (its connected_at), or None."""
        try:
            listed = [a for a in self.hub.agents() if a.get("agent_id") == self.s.agent_id]
        except AgentComError:
            return None
        return listed[-1].get("connected_at") if listed else None

    def _check_presence(self) -> None:
        """Another connection under our id gets our broadcasts too, and our direct messages when
        it connected first: say so, loudly, once."""
        if self.presence_since is None:
            self.presence_since = self._presence()
            return
        now_listed = self._presence()
        later = (
            [LATER_HAZARD.format(agent=self.s.agent_id)]
            if now_listed is not None and now_listed != self.presence_since
            else []
        )
        self._set_hazards(self.first_hazard + later)

    def _set_hazards(self, hazards: list[str]) -> None:
        if hazards != self.status["hazards"]:
            self.status["hazards"] = hazards
            self._event(
                "hazard" if hazards else "hazard_cleared", hazards[0] if hazards else "no other connection under our id"
            )

    def _on_frames(self, frames: list[str | bytes]) -> None:
        """Pushed messages are kept (in one transaction for all of them) before anything acts
        on them; other frames are reported."""
        for raw in frames:
            frame, problem = decode_frame(raw)
            kind = frame.get("type")
            if kind == "message":
                self.unstored.append(pushed_message(frame, self.s.agent_id, raw, problem))
            elif kind == "agent_left" and frame.get("agent_id") == self.s.agent_id:
                self.rejoin = True  # the hub no longer lists us: until we identify again, it stores our messages
            elif kind == "error":
                self._event("hub_error", f"hub error: {str(frame.get('error'))[:100]}")
            elif kind == "rate_limited":
                self._event("rate_limited", f"hub rate-limits us ({str(frame.get('retry_after_ms'))[:20]} ms)")
        self._take_in()

    def _drain(self, sweep: bool = False) -> bool:
        """What arrived while we were not connected waits in the mailbox: take it in by HTTP.
        A sweep (the same, while connected) says something only when it found something.
        False when the mailbox could not be read (the socket stays up: pushes keep coming,
        and the next sweep tries again)."""
        before = self.store.deliverable_count(self.clock())
        try:
            result = run_check(
                self.hub,
                self.store,
                self.s,
                0,
                False,
                self.clock(),
                agents_check=False,
                prune=False,  # the wake thread prunes, off the socket's path
                on_complete_poll=self._note_at_hub,
            )
        except (HubUnavailableError, HubProtocolError) as exc:
            self._event("warning", f"could not read the mailbox (tried again soon): {exc}")
            return False
        handled = sum(result["handled"].values())
        waiting = self.store.deliverable_count(self.clock())
        if not sweep:
            self._event(
                "drained", f"mailbox drained: {waiting - before} new need attention, {handled} handled by Tier 0"
            )
        elif waiting - before or handled:
            self._event(
                "swept",
                f"mailbox swept: {waiting - before} new need attention, {handled} handled by Tier 0"
                " (stored by the hub instead of pushed)",
            )
            self.arrived.set()
        for warning in result["warnings"]:
            self._event("warning", warning)
        return True

    def _note_at_hub(self, ids: list[str]) -> None:
        """What the hub holds (a whole mailbox read): pruning keeps these."""
        self.at_hub = tuple(ids)

    def _prune(self) -> None:
        """One pruning step when a pass is due (wake thread, own connection, short
        transactions): only once a whole mailbox was read, which says what the hub holds."""
        at_hub = self.at_hub
        if at_hub is not None:  # (what it dead-letters is said by the next intake)
            prune_store(self.wake_store, self.s, at_hub, self.clock(), 0.0)

    def _take_in(self) -> None:
        """Commit the pushed messages not yet stored, with their Tier 0 decisions, then send the
        auto-replies. A store that cannot take them now (disk full, busy) keeps them here, in
        memory, for the next try: a frame that reached this process is never dropped."""
        if not self.unstored:
            return
        if self.clock() < self.retry_store_at:
            return
        taken = list(self.unstored)
        readable = [m for m in taken if isinstance(m, Message)]
        batch = MailboxBatch(readable, 0, unreadable=tuple(m for m in taken if isinstance(m, Unreadable)))
        try:
            result = run_check(
                PushedFrames(self.hub, batch),
                self.store,
                self.s,
                0,
                False,
                self.clock(),
                via="push",
                agents_check=False,
            )
        except AgentComError as exc:
            self.retry_store_at = self.clock() + 1.0
            self._event(
                "store_failed", f"could not store {len(taken)} pushed message(s), kept in memory and retried: {exc}"
            )
            return
        del self.unstored[: len(taken)]
        self.retry_store_at = 0.0
        self.status["messages_received"] += len(taken)
        rows = {r["id"]: r for r in self.store.messages(ids=[m.id for m in readable], limit=len(readable) or 1)}
        for msg in {m.id: m for m in readable}.values():  # the same id pushed twice is one message
            row = rows.get(msg.id)
            disposition = row["disposition"] if row is not None else "?"
            reason = row["reason"] if row is not None else ""
            self._event(
                "message",
                f"message {safe_msg_id(msg.id)} from {safe_sender(msg.sender)}: "
                + ("needs the agent" if disposition == "attention" else f"handled by Tier 0 ({disposition}: {reason})"),
                id=msg.id,
                disposition=disposition,
                persist=False,
            )
        for warning in result["warnings"]:
            self._event("warning", warning, persist=False)
        self._persist_status()
        self.arrived.set()

    def _announce_status(self, ws: Any) -> None:
        status = current_status(self.store, self.s)
        if status != self.announced_status:
            ws.send(json.dumps({"type": "status", "status": status}))
            self.announced_status = status
            self._event("status", f"status announced: {status[:80]}")

    # waking the agent -------------------------------------------------------------

    def _wake_loop(self) -> None:
        while not self.stopping:
            try:
                if self.dispatcher is not None:
                    self._a2a_step()
                else:
                    self._maybe_wake()
                self._prune()
            except AgentComError as exc:
                self._event("error", f"wake step failed: {exc}")
            except Exception as exc:  # never let the wake thread die silently
                self._event("error", f"wake step failed: {type(exc).__name__}")
            self.arrived.wait(0.2)
            self.arrived.clear()

    def _maybe_wake(self) -> None:
        if self.waker is None:
            return
        store = self.wake_store
        now = self.clock()
        self.batcher.note_waiting(now, store.deliverable_count(now))
        due = self.batcher.due_at()
        if due is None or now < due or now < self.wake_paused_until:
            return
        with store.write():
            view = store.view([], now, self.s.wake.max_batch)
            plan = plan_check(MailboxBatch([], 0), view, self.s, now, self.s.wake.max_batch)
            store.apply_check(plan, now)
        leased = {lease.id for lease in plan.leases}
        before = {o.id: o.rec for o in view.open if o.id in leased}  # to undo a failed wake exactly
        for warning in plan.warnings:
            self._event("warning", warning)
        if not plan.messages:
            self.batcher.note_waiting(now, 0)
            return
        ids = [m["id"] for m in plan.messages]
        result = {
            "agent_id": self.s.agent_id,
            "messages": plan.messages,
            "handled": {},
            "pending": plan.pending,
            "warnings": [],
        }
        prompt = render_prompt(result, self.s.prompt_text_limit) + "\n" + WAKE_FOOTER
        outcome = self.waker.send(prompt, ids, [m["deliveries"] for m in plan.messages])
        if outcome.kind == "ok":
            with store.write():
                store.confirm_shown(ids)
            self.batcher.woke(now)
            with self._lock:
                self.status["wakes_sent"] += 1
                self._clear_wake_error(now)
            self._event("woke", f"woke the agent ({self.s.wake.mode}) with {len(ids)} message(s)", ids=ids)
            return
        with store.write():
            store.restore(before)  # not delivered: `check` and the next wake return them
        with self._lock:
            self.status["last_wake_error"] = wake_error(outcome, self.s.wake, now)
        if outcome.kind == "unauthorized":
            self.wake_paused_until = now + 600
            if not self.reported_unauthorized:
                self.reported_unauthorized = True
                self._event(
                    "wake_unauthorized",
                    f"WAKE REFUSED: {outcome.detail}; fix [wake] token; still receiving and storing",
                )
            return
        # refused (a 4xx): the settings are wrong, so retrying soon cannot help
        delay = self.batcher.failed(now, 60.0 if outcome.kind == "refused" else outcome.retry_after)
        self._event("wake_failed", f"wake failed: {outcome.detail}; retrying in {delay:.1f} s")

    def _a2a_step(self) -> None:
        """Mode a2a: the dispatcher does what is due; `status` gets what changed."""
        dispatcher = self.dispatcher
        if dispatcher is None:
            return
        dispatcher.step()
        if dispatcher.changed:
            dispatcher.changed = False
            summary = dispatcher.summary()
            with self._lock:
                self.status["a2a"] = summary
                self.status["last_wake_error"] = dispatcher.last_error
                write_status(self.directory, self.status)

    def _clear_wake_error(self, now: float) -> None:
        """A wake went through: the last error stays for `status`, marked cleared (`check` stops warning)."""
        error = self.status.get("last_wake_error")
        if error and "cleared_at" not in error:
            self.status["last_wake_error"] = {**error, "cleared_at": now}

    # reporting ------------------------------------------------------------------

    def _event(self, kind: str, text: str, persist: bool = True, **fields: Any) -> None:
        with self._lock:
            self.events(kind, text, **fields)
            self.status["last_event"] = f"{kind}: {neutralise(text)[:200]}"
            self.status["last_event_at"] = self.clock()
            if persist:
                write_status(self.directory, self.status)

    def _persist_status(self) -> None:
        with self._lock:
            write_status(self.directory, self.status)


def run_watch(settings: Settings, jsonl: bool = False) -> int:
    """The CLI's entry: the exit code."""
    return Watch(settings, Events(jsonl)).run()


__all__ = ["Watch", "Events", "run_watch"]
