"""The watch's wake thread: it drives the wake driver the `[wake]` table asks for, takes up a
new table on SIGHUP, and prunes the store, each with its own store connection and hub client,
so a slow gateway never holds up the socket.

Two drivers, one shape (`WakeDriver`): `hookwake.HookWakeDriver` (modes `agent`, `wake`,
`command`) and `a2a.A2ADispatcher` (mode `a2a`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .a2a import A2ADispatcher
from .actions.check import prune_store
from .config import Settings
from .errors import AgentComError
from .hookwake import HookWakeDriver
from .store import MessageStore
from .untrusted import neutralise
from .watchstate import StatusBoard

if TYPE_CHECKING:
    from .actions.common import Hub


class WakeDriver(Protocol):
    """What the wake thread asks of a driver."""

    changed: bool  # something `status` shows changed since the last look

    @property
    def last_error(self) -> dict[str, Any] | None: ...

    def step(self) -> None: ...  # do what is due, within [wake] timeout per request

    def status(self) -> dict[str, Any]: ...  # its fields of watch.json

    def retry_now(self) -> None: ...  # SIGHUP, [wake] unchanged: what is held back is tried now

    def close(self) -> None: ...


class WakeThread:
    def __init__(
        self,
        settings: Settings,
        store: MessageStore,
        hub: Hub,
        board: StatusBoard,
        clock: Callable[[], float] = time.time,
        reload: Callable[[], Settings] | None = None,
        arrived: threading.Event | None = None,
        at_hub: Callable[[], tuple[str, ...] | None] = lambda: None,
    ):
        self.s = settings
        self.store = store
        self.hub = hub
        self.board = board
        self.clock = clock
        self.reload = reload  # loads the settings again (SIGHUP)
        self.reload_requested = False  # set by the SIGHUP handler: a flag only
        self.arrived = arrived or threading.Event()  # set when a message is taken in: look at once
        self.at_hub = at_hub  # the ids of the last whole mailbox read (pruning keeps them); None: none yet
        self.driver: WakeDriver | None = None

    def start(self) -> None:
        """Build the driver and say what wakes the agent."""
        self.driver = self._driver(self.s, 0, None)
        wake = self.s.wake
        if isinstance(self.driver, A2ADispatcher):
            self.board.event(
                "config",
                f"A2A mode: conversations go to {wake.url} as tasks "
                f"(one context per {wake.context}); answers come back to the senders",
            )
        elif self.driver is None:
            self.board.event(
                "config",
                "no [wake] configured: messages wait in the store for `agentcom check`"
                f" (add a [wake] table, then `kill -HUP {self.board.status['pid']}` to take it up)",
            )

    def _driver(self, s: Settings, wakes_sent: int, last_error: dict[str, Any] | None) -> WakeDriver | None:
        driver: HookWakeDriver | A2ADispatcher
        if not s.wake.configured:
            return None
        if s.wake.mode == "a2a":  # (its tasks are in the store: a new dispatcher resumes them)
            driver = A2ADispatcher(s, self.store, self.hub, self._report, self.clock)
        else:
            driver = HookWakeDriver(s, self.store, self._report, self.clock, wakes_sent=wakes_sent)
        driver.failures.last = last_error
        return driver

    def run(self, stopping: Callable[[], bool]) -> None:
        while not stopping():
            try:
                if self.reload_requested:
                    self.reload_requested = False
                    self._reload_wake()
                self._step()
                self._prune()
            except AgentComError as exc:
                self.board.event("error", f"wake step failed: {exc}")
            except Exception as exc:  # never let the wake thread die silently
                self.board.event("error", f"wake step failed: {type(exc).__name__}")
            self.arrived.wait(0.2)
            self.arrived.clear()

    def close(self) -> None:
        if self.driver is not None:
            self.driver.close()

    def _step(self) -> None:
        """The driver does what is due; `status` gets what changed."""
        driver = self.driver
        if driver is None:
            return
        driver.step()
        if driver.changed:
            driver.changed = False
            self.board.update(**driver.status())

    def _report(self, kind: str, text: str, **fields: Any) -> None:
        """A driver's event, with its last error in watch.json first (`status` agrees with it)."""
        if self.driver is not None:
            self.board.update(persist=False, last_wake_error=self.driver.last_error)
        self.board.event(kind, text, **fields)

    def _prune(self) -> None:
        """One pruning step when a pass is due (own connection, short transactions): only once
        a whole mailbox was read, which says what the hub holds."""
        at_hub = self.at_hub()
        if at_hub is not None:  # (what it dead-letters is said by the next intake)
            prune_store(self.store, self.s, at_hub, self.clock(), 0.0)

    def _reload_wake(self) -> None:
        """SIGHUP: read the settings again and take up their [wake] table. What the connection
        rests on (hub, id, token, Tier 0 rules) changes only at a restart: the event names what
        changed and waits for one. A config that no longer loads leaves the running one in place."""
        if self.reload is None:
            return
        try:
            new = self.reload()
        except AgentComError as exc:
            self.board.event("config", f"SIGHUP: the config was not reloaded (the running one stays): {exc}")
            return
        later = [
            n for n in Settings.field_names() if n not in ("wake", "sources") and getattr(new, n) != getattr(self.s, n)
        ]
        note = f"; changed too, taken up at a restart: {', '.join(later)}" if later else ""
        wake = new.wake
        if wake == self.s.wake:
            # The fault was elsewhere (the gateway, its token): a wake held back is tried now.
            if self.driver is not None:
                self.driver.retry_now()
            self.board.event(
                "config", f"SIGHUP: config read again, [wake] unchanged; a wake held back is tried now{note}"
            )
            self.arrived.set()
            return
        if self.driver is not None:
            self.driver.close()
            self.driver = None
        self.s = self.s.replace(wake=wake)
        status = self.board.status
        error = status.get("last_wake_error")  # it was about the [wake] replaced: kept, marked cleared
        if error and "cleared_at" not in error:
            error = {**error, "cleared_at": self.clock()}
        self.driver = self._driver(self.s, status.get("wakes_sent", 0), error)
        self.board.update(persist=False, wake_mode=wake.mode if wake.configured else None, last_wake_error=error)
        if not wake.configured:
            now = "no wake: messages wait in the store for `agentcom check`"
        else:
            now = f"wakes go to {wake.url if wake.mode != 'command' else wake.argv()[0]} (mode {wake.mode})"
        self.board.event("config", f"SIGHUP: [wake] reloaded: {neutralise(now)}{note}")
        self.arrived.set()  # what waits is woken for now


__all__ = ["WakeDriver", "WakeThread"]
