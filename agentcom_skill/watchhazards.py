"""What a watch warns about its standing at the hub (guarantee 7): another connection under
our id (there before us: it gets our direct messages; or after us: it gets copies of our
broadcasts), and our token refused (reset at the hub: pushes still come, nothing can be sent
or acked). Each is a hazard in watch.json, which `check`, `status` and `doctor` show.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .actions.check import send_refused_auto_replies
from .config import Settings, reread_token
from .errors import AgentComError, AuthError
from .store import MessageStore
from .watchstate import StatusBoard

if TYPE_CHECKING:
    from .client import HubClient

FIRST_HAZARD = (
    "another connection was identified as {agent} on the hub before this watch: direct messages go to it,"
    " not to this watch (broadcasts go to both); stop it, or stop this watch"
)
LATER_HAZARD = (
    "another connection identified as {agent} on the hub after this watch: direct messages still come to the"
    " first connection (this watch), broadcasts go to both (each gets a copy)"
)
TOKEN_PROBE_SINCE = 2**53  # a mailbox poll past every seq: answers nothing, but checks the token


class HubHazards:
    """The hazards of the watch's socket thread: looked at on connecting, at each ping (the
    presence) and every few seconds (the token)."""

    def __init__(
        self,
        settings: Settings,
        store: MessageStore,
        hub: HubClient,
        board: StatusBoard,
        clock: Callable[[], float] = time.time,
        new_token: Callable[[str], None] = lambda token: None,
    ):
        self.s = settings
        self.store = store
        self.hub = hub
        self.board = board
        self.clock = clock
        self.new_token = new_token  # a new token the hub takes: also for the other hub clients
        self.token = settings.token  # replaced when the hub refuses it and its source holds a new one
        self.presence_since: Any = None  # our entry's connected_at in /api/agents
        self.first: list[str] = []  # another connection under our id was there before us
        self.later: list[str] = []
        self.token_hazard: list[str] = []

    # another connection under our id -----------------------------------------------

    def presence(self) -> Any:
        """Our entry in the hub's list of connected agents (its connected_at), or None."""
        try:
            listed = [a for a in self.hub.agents() if a.get("agent_id") == self.s.agent_id]
        except AgentComError:
            return None
        return listed[-1].get("connected_at") if listed else None

    def connected(self, already_listed: bool) -> None:
        """Identified: our own entry now, and whether another was listed before we identified."""
        self.presence_since = self.presence()
        self.first = [FIRST_HAZARD.format(agent=self.s.agent_id)] if already_listed else []
        self.later = []
        self._set(self.first)

    def check_presence(self) -> None:
        """Another connection under our id gets our broadcasts too, and our direct messages when
        it connected first: say so, loudly, once."""
        if self.presence_since is None:
            self.presence_since = self.presence()
            return
        now_listed = self.presence()
        self.later = (
            [LATER_HAZARD.format(agent=self.s.agent_id)]
            if now_listed is not None and now_listed != self.presence_since
            else []
        )
        self._set(self.first + self.later)

    # our token ------------------------------------------------------------------------

    def check_token(self) -> None:
        """A token reset at the hub leaves our socket up (pushes keep coming) while every HTTP
        call is refused: ask the hub with a poll that returns nothing."""
        try:
            self.hub.poll(self.s.agent_id, since=TOKEN_PROBE_SINCE)
        except AuthError as exc:
            self.token_refused(exc)
            return
        except AgentComError:
            return  # the hub's trouble, not the token's: the sweeps report it
        if self.token_hazard:
            self._token_works("the hub takes our token again")

    def token_refused(self, exc: AgentComError) -> None:
        """The hub refuses our token: re-read its source (a token file or the config file);
        with a new token that works, go on with it. Otherwise a hazard that `check`, `status`
        and `doctor` show, until it works again."""
        fresh = reread_token(self.s)
        if fresh and fresh != self.token:
            self.hub.use_token(fresh)
            try:
                self.hub.poll(self.s.agent_id, since=TOKEN_PROBE_SINCE)
            except AgentComError:
                pass
            else:
                self.token = fresh
                self.new_token(fresh)
                self._token_works(f"the new token from {self.s.sources.get('token', 'its source')} is taken")
                return
            self.hub.use_token(self.token)
        source = self.s.sources.get("token", "the settings")
        hazard = [
            f"the hub refuses this agent's token (from {source}): pushed messages are still stored, but nothing "
            f"can be sent or acked; put the agent's new token in {source} (the watch re-reads it) ({exc})"
        ]
        if hazard != self.token_hazard:
            self.token_hazard = hazard
            self._set(self.first + self.later)

    def _token_works(self, why: str) -> None:
        self.token_hazard = []
        self._set(self.first + self.later)
        self.board.event("token", why)
        sent, warnings = send_refused_auto_replies(self.hub, self.store, self.s, self.clock())
        if sent:
            self.board.event("auto_replies", f"{sent} auto-reply(ies) the hub had refused for our token sent now")
        for warning in warnings:
            self.board.event("warning", warning)

    def _set(self, hazards: list[str]) -> None:
        hazards = hazards + self.token_hazard
        if hazards != self.board.status["hazards"]:
            self.board.status["hazards"] = hazards
            self.board.event(
                "hazard" if hazards else "hazard_cleared", hazards[0] if hazards else "no other connection under our id"
            )


__all__ = ["FIRST_HAZARD", "LATER_HAZARD", "HubHazards"]
