"""agentcom: poll an AgentCom hub's mailbox and hand an agent only what needs it.

Public API: `check`, `send`, `reply`, `ack`, `defer`, `dismiss`, `show`, `inbox`,
`thread`, `search`, `sent`, `status`, `agents`, `log`, `join`, `leave`, `channels`, each returning the same plain dict
the CLI prints with `--json`, and the `AgentComError` hierarchy.
The actions are imported lazily: `import agentcom_skill` stays cheap.
"""

from __future__ import annotations

from typing import Any

from .errors import (
    AgentComError,
    AuthError,
    BusyError,
    ConfigError,
    HubProtocolError,
    HubUnavailableError,
    RateLimitedError,
    StateError,
    UsageError,
)

__version__ = "0.4.0"

_ACTIONS = (
    "check",
    "send",
    "reply",
    "ack",
    "defer",
    "dismiss",
    "show",
    "inbox",
    "thread",
    "search",
    "sent",
    "status",
    "set_status",
    "wait",
    "agents",
    "log",
    "join",
    "leave",
    "channels",
)

__all__ = [
    *_ACTIONS,
    "AgentComError",
    "AuthError",
    "BusyError",
    "ConfigError",
    "HubProtocolError",
    "HubUnavailableError",
    "RateLimitedError",
    "StateError",
    "UsageError",
]


def __getattr__(name: str) -> Any:
    if name in _ACTIONS:
        from . import skill

        return getattr(skill, name)
    raise AttributeError(f"module 'agentcom_skill' has no attribute {name!r}")
