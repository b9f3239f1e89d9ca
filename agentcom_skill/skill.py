"""The skill's actions: thin compositions of config, state store, hub client and Tier 0.

Each returns a plain JSON-serialisable dict, the same the CLI prints with `--json`.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from .client import HubClient
from .config import ENV_VARS, Settings, default_config_path, load_settings, mask_token, write_config_file
from .delivery import confirm_shown, hub_prefix, mark_acked, message_view, plan_check
from .errors import AgentComError, ConfigError, UsageError
from .message import MailboxBatch, Message
from .state import AgentState, StateStore
from .tier0 import DISPOSITIONS, auto_reply_payload

AGENTS_CHECK_INTERVAL = 300.0  # seconds between looks at /api/agents for the "connected" hazard


def resolve_settings(settings: Settings | None, overrides: Mapping[str, Any]) -> Settings:
    if settings is not None:
        if overrides:
            raise UsageError("pass either settings or setting overrides, not both")
        return settings
    return load_settings(overrides)


def hub_client(settings: Settings) -> HubClient:
    return HubClient(
        settings.hub_url,
        settings.token,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_response_bytes=settings.max_response_bytes,
    )


def state_store(settings: Settings) -> StateStore:
    return StateStore(settings.agent_state_dir(), settings.lock_timeout)


def check(
    max: int | None = None,
    peek: bool = False,
    *,
    emit: Callable[[dict[str, Any]], None] | None = None,
    settings: Settings | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Poll the mailbox, let Tier 0 handle what code can, and return what needs the agent.

    `emit`, when given, is called with the result before the delivery is confirmed in the
    state (the CLI prints there): a run killed before its output does not count as shown.
    """
    s = resolve_settings(settings, overrides)
    if max is not None and (isinstance(max, bool) or not isinstance(max, int) or max < 1):
        raise UsageError("max must be a positive integer")
    with hub_client(s) as hub:
        return run_check(hub, state_store(s), s, max, peek, time.time(), emit)


def run_check(
    hub: HubClient,
    store: StateStore,
    s: Settings,
    limit: int | None,
    peek: bool,
    now: float,
    emit: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """`check` on a given hub and store (the property tests drive this with in-memory ones).

    A first look goes without the lock: when the mailbox holds nothing new and the look
    finds nothing to change (the idle heartbeat), the run takes no lock and writes
    nothing. Otherwise the state is read again under the lock and everything is decided
    afresh from that.
    """
    state, warnings = store.load(move_corrupt=False)
    batch = hub.poll(s.agent_id, 0)
    has_new = any(not state.knows(m.id) for m in batch.messages)
    if peek or not has_new:
        plan = plan_check(state, batch, s, now, limit)
        idle = not (warnings or plan.changed or hub_prefix(state, batch) is not None or _agents_check_due(state, now))
        if peek or idle:
            result = _check_result(s, plan.messages, plan.handled, plan.pending, warnings + plan.warnings)
            if emit:
                emit(result)
            return result
    with store.locked():
        state, warnings = store.load()
        plan = plan_check(state, batch, s, now, limit)
        warnings += plan.warnings
        if _agents_check_due(state, now):
            warnings += _connected_hazard(hub, s)
            state.agents_checked_at = now
            plan.changed = True
        if plan.changed:
            # Write-ahead: leases and answered pings are on disk before anything is
            # sent or returned, so a crash never answers a ping twice.
            store.save(state)
        # From here on the messages are leased to us: failures become warnings, so
        # the caller still gets what was leased.
        for reply in plan.replies:
            try:
                hub.send(reply.to, "response", auto_reply_payload(reply.kind, s.status, s.capabilities), reply.reply_to)
            except AgentComError as exc:
                warnings.append(f"could not send the {reply.kind} to {reply.to}: {exc}")
        try:
            acked_changed = _ack_prefix(hub, s, state, batch)
        except AgentComError as exc:
            acked_changed = False
            warnings.append(f"could not ack the hub: {exc}")
        result = _check_result(s, plan.messages, plan.handled, plan.pending, warnings)
        if emit:
            emit(result)
        confirm_shown(state, [m["id"] for m in plan.messages])
        if plan.messages or acked_changed:
            store.save(state)
    return result


def _check_result(s: Settings, messages, handled, pending, warnings) -> dict[str, Any]:
    return {
        "agent_id": s.agent_id,
        "messages": messages,
        "handled": {k: handled.get(k, 0) for k in DISPOSITIONS},
        "pending": pending,
        "warnings": warnings,
    }


def _ack_prefix(hub: HubClient, s: Settings, state: AgentState, batch: MailboxBatch) -> bool:
    """Ack the hub up to the finished prefix of `batch`; True when the state changed."""
    up_to = hub_prefix(state, batch)
    if up_to is None:
        return False
    hub.ack(s.agent_id, up_to)
    changed = state.hub_acked != up_to
    state.hub_acked = up_to
    return changed


def _agents_check_due(state: AgentState, now: float) -> bool:
    return now - state.agents_checked_at >= AGENTS_CHECK_INTERVAL


def _connected_hazard(hub: HubClient, s: Settings) -> list[str]:
    try:
        listed = any(a.get("agent_id") == s.agent_id for a in hub.agents())
    except AgentComError as exc:
        return [f"could not list connected agents: {exc}"]
    if listed:
        return [f"{s.agent_id} is connected to the hub by WebSocket: direct messages are pushed there and bypass this mailbox"]
    return []


def ack(seq: int | None = None, *, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Mark returned messages (all, or those up to `seq`) as done; ack the hub's finished prefix."""
    s = resolve_settings(settings, overrides)
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
        raise UsageError("seq must be an integer")
    with hub_client(s) as hub:
        return run_ack(hub, state_store(s), s, seq, time.time())


def run_ack(hub: HubClient, store: StateStore, s: Settings, seq: int | None, now: float) -> dict[str, Any]:
    with store.locked():
        state, warnings = store.load()
        acked = mark_acked(state, seq, now)
        if acked:
            store.save(state)
        batch = hub.poll(s.agent_id, 0)
        if _ack_prefix(hub, s, state, batch):
            store.save(state)
    return {
        "agent_id": s.agent_id,
        "acked": acked,
        "hub_acked_up_to": state.hub_acked,
        "unacked": sum(1 for e in state.attention.values() if e.get("shown")),
        "warnings": warnings,
    }


def send(
    to: str,
    text: str | None = None,
    type: str | None = None,  # noqa: A002 - the protocol's field name
    reply_to: str | None = None,
    payload: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Send a direct message (`to` an agent id) or a broadcast (`to="broadcast"`)."""
    s = resolve_settings(settings, overrides)
    if not isinstance(to, str) or not to.strip():
        raise UsageError("to must be an agent id or 'broadcast'")
    if payload is not None and not isinstance(payload, Mapping):
        raise UsageError("payload must be a JSON object")
    body = dict(payload or {})
    if text is not None:
        if not isinstance(text, str):
            raise UsageError("text must be a string")
        body["text"] = text
    for name, value in (("type", type), ("reply_to", reply_to)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise UsageError(f"{name} must be a non-empty string")
    with hub_client(s) as hub:
        msg_id = hub.send(to.strip(), type, body, reply_to)
    return {"id": msg_id, "to": to.strip(), "type": type or "chat", "reply_to": reply_to}


def status(*, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Where we stand: hub health, cursor, pending, leased and dead-lettered messages, hazards."""
    s = resolve_settings(settings, overrides)
    state, warnings = state_store(s).load(move_corrupt=False)
    now = time.time()
    hub_info: dict[str, Any] = {"ok": False, "error": None}
    hazards: list[str] = []
    mailbox = None
    with hub_client(s) as hub:
        try:
            health = hub.health()
            hub_info = {"ok": health.get("status") == "ok", "error": None, "agents_connected": health.get("agents_connected")}
            mailbox = len(hub.poll(s.agent_id, 0).messages)
            if mailbox >= 0.8 * s.mailbox_cap:
                hazards.append(f"mailbox holds {mailbox} messages, near the hub's cap of {s.mailbox_cap}")
            hazards += _connected_hazard(hub, s)
        except AgentComError as exc:
            hub_info = {"ok": False, "error": str(exc)}
    leased = [e for e in state.attention.values() if e["deliveries"] > 0 and e["lease_until"] > now]
    return {
        "agent_id": s.agent_id,
        "hub_url": s.hub_url,
        "token": mask_token(s.token),
        "state_dir": str(s.agent_state_dir()),
        "hub": hub_info,
        "cursor": state.cursor,
        "hub_acked": state.hub_acked,
        "mailbox": mailbox,
        "pending": len(state.attention) - len(leased),
        "in_lease": len(leased),
        "dead_letters": len(state.dead),
        "hazards": hazards,
        "warnings": warnings,
    }


def agents(*, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Agents connected to the hub by WebSocket (the hub lists no others)."""
    s = resolve_settings(settings, overrides)
    with hub_client(s) as hub:
        return {"agents": hub.agents()}


def log(disposition: str | None = None, limit: int = 50, *, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """What Tier 0 handled and why, peers' latest statuses, and dead letters."""
    s = resolve_settings(settings, overrides)
    if disposition is not None and disposition not in DISPOSITIONS:
        raise UsageError(f"disposition must be one of {', '.join(DISPOSITIONS)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UsageError("limit must be a positive integer")
    state, warnings = state_store(s).load(move_corrupt=False)
    entries = [e for e in state.log if disposition is None or e.get("disposition") == disposition]
    return {
        "agent_id": s.agent_id,
        "entries": entries[-limit:],
        "roster": state.roster,
        "dead_letters": state.dead[-limit:],
        "warnings": warnings,
    }


def reply(seq: int, text: str, *, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Answer the message at `seq` (still at the hub): a response to its sender, reply_to its id."""
    s = resolve_settings(settings, overrides)
    with hub_client(s) as hub:
        msg = _message_at(hub, s, seq)
        msg_id = hub.send(msg.sender, "response", {"text": text}, msg.id)
    return {"id": msg_id, "to": msg.sender, "type": "response", "reply_to": msg.id}


def show_message(seq: int, *, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """One message still at the hub, in full; changes nothing."""
    s = resolve_settings(settings, overrides)
    with hub_client(s) as hub:
        msg = _message_at(hub, s, seq)
    state, _ = state_store(s).load(move_corrupt=False)
    entry = state.attention.get(msg.id, {"deliveries": 0, "why": "not returned by check"})
    return message_view(msg, entry, entry["deliveries"] > 1)


def _message_at(hub: HubClient, s: Settings, seq: int) -> Message:
    for msg in hub.poll(s.agent_id, 0).messages:
        if msg.seq == seq:
            return msg
    raise UsageError(f"no message with seq {seq} is at the hub for {s.agent_id} (acked or never there)")


def init_config(
    overrides: Mapping[str, Any],
    *,
    register: bool = False,
    capabilities: str | None = None,
    ignore_from: str | None = None,
    status: str | None = None,
    force: bool = False,
    env: Mapping[str, str] | None = None,
) -> str:
    """Write a config file from the given settings; with `register`, get a token from the hub first."""
    import os
    from pathlib import Path

    env = os.environ if env is None else env
    path = overrides.get("config") or env.get(ENV_VARS["config"]) or default_config_path()
    values: dict[str, Any] = {
        "hub_url": overrides.get("hub_url") or env.get(ENV_VARS["hub_url"]),
        "agent_id": overrides.get("agent_id") or env.get(ENV_VARS["agent_id"]),
    }
    for name in ("hub_url", "agent_id"):
        if not values[name]:
            raise ConfigError(f"{name} is needed: pass --{name.replace('_', '-')} or set {ENV_VARS[name]}")
    if Path(path).expanduser().exists() and not force:
        raise ConfigError(f"config file {path} already exists (use --force to overwrite it)")
    if register:
        with HubClient(values["hub_url"], None) as hub:
            values["token"] = hub.register(values["agent_id"])["token"]
    elif overrides.get("token_file") or env.get(ENV_VARS["token_file"]):
        values["token_file"] = os.path.abspath(overrides.get("token_file") or env[ENV_VARS["token_file"]])
    if capabilities is not None:
        values["capabilities"] = [c.strip() for c in capabilities.split(",") if c.strip()]
    if ignore_from is not None:
        values["ignore_from"] = [c.strip() for c in ignore_from.split(",") if c.strip()]
    if status is not None:
        values["status"] = status
    write_config_file(Path(path).expanduser(), values, force=force)
    return str(path)
