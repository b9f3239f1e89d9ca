"""One exception hierarchy for every failure, each kind mapped once to an exit code.

Messages are one line, meant for a human, and never contain the token.
"""

from __future__ import annotations


class AgentComError(Exception):
    """Base of every error agentcom raises on purpose."""

    exit_code = 1
    kind = "error"


class UsageError(AgentComError):
    """The call itself is wrong: a bad argument, or a request the hub rejected as invalid."""

    exit_code = 2
    kind = "usage"


class ConfigError(UsageError):
    """A setting is missing or invalid."""

    kind = "config"


class AuthError(AgentComError):
    """The hub refused the token (401)."""

    exit_code = 3
    kind = "auth"


class HubUnavailableError(AgentComError):
    """The hub could not be reached, timed out, or kept failing after retries."""

    exit_code = 4
    kind = "hub_unavailable"


class RateLimitedError(HubUnavailableError):
    """The hub kept answering 429 beyond the bound we wait for."""

    kind = "rate_limited"


class PossiblyDelivered(HubUnavailableError):
    """A send reached the hub but its reply was lost, cut off or unreadable: the hub probably
    acted on it, so it is recorded as sent and never repeated blindly."""

    kind = "possibly_delivered"


class HubProtocolError(AgentComError):
    """The hub answered something that breaks the contract."""

    exit_code = 5
    kind = "hub_protocol"


class NoSuchRoute(HubProtocolError):
    """The hub answered 404 for an /api/ route: it has no such endpoint (or hub_url is wrong)."""


class StateError(AgentComError):
    """The local state directory or file cannot be used."""

    exit_code = 6
    kind = "state"


class BusyError(AgentComError):
    """Another run for the same agent held the lock past the wait bound."""

    exit_code = 7
    kind = "busy"


EXIT_CODES = {
    0: "success (also when nothing is pending)",
    1: "check --exit-code: messages need attention; wait, ping: timed out; otherwise an unexpected error",
    2: "usage or configuration error",
    3: "authentication refused by the hub",
    4: "hub unreachable or failing after retries",
    5: "hub answered something that breaks the contract",
    6: "local state unusable",
    7: "busy: another run for the same agent holds the lock",
}
