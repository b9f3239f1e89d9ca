"""agentcom: poll an AgentCom hub's mailbox and hand an agent only what needs it.

Public API: `check`, `send`, `reply`, `ack`, `defer`, `dismiss`, `show`, `inbox`,
`thread`, `search`, `sent`, `status`, `agents`, `log`, `join`, `leave`, `channels`, each returning the same plain dict
the CLI prints with `--json`, and the `AgentComError` hierarchy.
The actions are imported lazily: `import agentcom_skill` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
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

# Each public action and the module of `actions/` that holds it.
_ACTIONS = {
    "check": "check",
    "wait": "check",
    "send": "send",
    "reply": "send",
    "ack": "finish",
    "defer": "finish",
    "dismiss": "finish",
    "show": "history",
    "inbox": "history",
    "thread": "history",
    "search": "history",
    "sent": "history",
    "log": "history",
    "status": "status",
    "set_status": "status",
    "agents": "status",
    "join": "channels",
    "leave": "channels",
    "channels": "channels",
}

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
        return getattr(import_module(f".actions.{_ACTIONS[name]}", __name__), name)
    raise AttributeError(f"module 'agentcom_skill' has no attribute {name!r}")
