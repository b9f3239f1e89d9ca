"""The real hub's rate limits: token buckets per (who, channel, tier), refilled continuously.

Tiers as on the real hub: `normal` (sending messages, over HTTP or the socket) holds 60 and
refills one a second; `light` (listing agents, pings, status updates) 120 and two a second;
`heavy` (registering, identifying again) 10 and ten a minute. A refusal says when to retry,
rounded up to whole seconds as the real hub does. Pure: the clock is injected.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import NamedTuple


class Tier(NamedTuple):
    name: str
    capacity: float  # the burst
    per_second: float  # the refill


REAL_TIERS = {
    "light": Tier("light", 120, 2.0),
    "normal": Tier("normal", 60, 1.0),
    "heavy": Tier("heavy", 10, 10 / 60),
}

# A warning frame goes out over the socket once fewer than this share of the bucket is left.
WARN_SHARE = 0.2

# WebSocket frame types by tier; anything else is `normal`.
WS_TIERS = {
    "ping": "light",
    "list_agents": "light",
    "list_channels": "light",
    "status": "light",
    "channel_history": "light",
    "identify": "heavy",
}


class Verdict(NamedTuple):
    allowed: bool
    remaining: int  # whole tokens left once this one is taken (when allowed)
    retry_after_ms: int  # when refused: whole seconds, in milliseconds
    warn: bool  # allowed, but the bucket is nearly empty
    tier: str
    capacity: int


class RateLimiter:
    """Buckets keyed by whatever the caller passes (an agent id or an IP, and the channel)."""

    def __init__(self, tiers: dict[str, Tier] | None = None, clock: Callable[[], float] = time.monotonic):
        self.tiers = dict(REAL_TIERS if tiers is None else tiers)
        self.clock = clock  # injected by tests
        self._buckets: dict[tuple[str, ...], tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: tuple[str, ...], tier_name: str) -> Verdict:
        """Take one token from the bucket of `key` in `tier_name`, or say how long to wait."""
        tier = self.tiers[tier_name]
        capacity = max(1.0, tier.capacity)  # at least one request fits, whatever the settings
        now = self.clock()
        with self._lock:
            bucket = (*key, tier_name)
            tokens, last = self._buckets.get(bucket, (capacity, now))
            tokens = min(capacity, tokens + max(0.0, now - last) * tier.per_second)
            if tokens >= 1:
                tokens -= 1
                self._buckets[bucket] = (tokens, now)
                warn = tokens < math.floor(capacity * WARN_SHARE)
                return Verdict(True, int(tokens), 0, warn, tier_name, int(capacity))
            self._buckets[bucket] = (tokens, now)
        wait_s = (1 - tokens) / tier.per_second if tier.per_second > 0 else 60.0
        return Verdict(False, 0, max(1, math.ceil(wait_s)) * 1000, False, tier_name, int(capacity))

    def refusal(self, verdict: Verdict) -> tuple[dict[str, object], dict[str, str]]:
        """The real hub's 429 body and headers for a refused HTTP request."""
        body = {"error": "rate_limited", "retry_after_ms": verdict.retry_after_ms, "tier": verdict.tier}
        return body, {"retry-after": str(max(1, verdict.retry_after_ms // 1000))}


def hub_limiter(
    message_rate: float = 1.0, message_burst: float = 60, clock: Callable[[], float] = time.monotonic
) -> RateLimiter:
    """The real hub's tiers, with the `normal` tier (sending messages) set as asked."""
    tiers = dict(REAL_TIERS)
    tiers["normal"] = Tier("normal", message_burst, message_rate)
    return RateLimiter(tiers, clock)
