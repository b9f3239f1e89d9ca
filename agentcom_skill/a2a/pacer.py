"""`RequestPacer`: the A2A agent's request limit, kept from our side (pure, the time passed in).

The agent limits requests per peer and counts polls too (OpenClaw: -32000 "Peer is rate
limited" over HTTP 200, or 429, without Retry-After): a sliding window with a generous
ceiling, which learns the agent's own limit from its first refusal, then backs off."""

from __future__ import annotations

import random
from collections import deque

from ..transport import clamp_wait

LEARNED_FOR = 600.0  # seconds a request limit learned from a refusal holds (then we try the ceiling again)
# A refusal teaches the limit only when this many of our requests are in its window: fewer says
# the agent counted others' too (a previous run's, another client's under the same peer token).
LEARN_FROM = 20
BACKOFF_MAX = 60.0


class RequestPacer:
    """At most `per_minute` requests in any 60 s (a generous ceiling), or fewer once a refusal
    showed the agent's own limit (it counts polls too, and not the requests it refuses), and
    nothing at all before `not_before` (after a refusal). Pure: the caller passes the time."""

    def __init__(self, per_minute: int, rng: random.Random | None = None):
        self.per_minute = per_minute
        self.sent: deque[float] = deque()
        self.not_before = 0.0
        self.refusals = 0
        self.learned: int | None = None  # the agent's limit, as its last refusal showed it
        self.learned_at = 0.0
        self.rng = rng or random.Random()

    def limit(self, now: float) -> int:
        if self.learned is not None and not 0 <= now - self.learned_at < LEARNED_FOR:
            self.learned = None  # the agent's limit may have been raised: the ceiling again
        return self.per_minute if self.learned is None else min(self.per_minute, self.learned)

    def _forget_old(self, now: float) -> None:
        while self.sent and self.sent[0] <= now - 60:
            self.sent.popleft()

    def wait(self, now: float) -> float:
        """Seconds before the next request may go (0: now)."""
        self._forget_old(now)
        wait = max(0.0, self.not_before - now)
        limit = self.limit(now)
        if len(self.sent) >= limit:
            wait = max(wait, self.sent[len(self.sent) - limit] + 60 - now)
        return wait

    def note(self, now: float) -> None:
        self.sent.append(now)

    def refused(self, now: float, retry_after: float | None = None) -> float:
        """After a rate-limit answer: learn the limit, then back off. The refused request did
        not count at the agent; the ones before it in the last minute did, so they are its limit
        (unless too few to say: the agent's window may hold another run's requests)."""
        if self.sent:
            self.sent.pop()
        self._forget_old(now)
        if len(self.sent) >= LEARN_FROM:
            self.learned, self.learned_at = len(self.sent), now
        return self.backoff(now, retry_after)

    def backoff(self, now: float, retry_after: float | None = None) -> float:
        """Hold every request: Retry-After, or 5 s doubling to 60 s, jittered."""
        self.refusals += 1
        if retry_after is not None:
            delay = clamp_wait(retry_after)
        else:
            base = min(BACKOFF_MAX, 5.0 * 2 ** (self.refusals - 1))
            delay = self.rng.uniform(base / 2, base)
        self.not_before = now + delay
        return delay

    def accepted(self) -> None:
        self.refusals = 0
