"""The one place that turns results into text: for a terminal, and for an LLM.

Everything that came from the hub is untrusted: each piece goes through untrusted.py
(neutralised for a terminal, fenced for an LLM) before it is put in a line here.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .untrusted import (
    SAFE_HEX_PREFIX,
    fenced,
    neutralise,
    one_line,
    safe_field,
    safe_msg_id,
    safe_sender,
    safe_type,
    unfence,
)

# Task-protocol fields rendered as words when a payload has no text.
_WORD_FIELDS = {
    "action": "{}",
    "task_id": "task {}",
    "title": '"{}"',
    "description": "{}",
    "status": "status: {}",
    "percent": "{}% done",
    "note": "{}",
    "feedback": "{}",
}
# (A payload reaches payload_words only when its text is not a string or a number: a text of
# another kind, a list or an object, is shown with the rest, never dropped.)
_QUIET_FIELDS = {"priority", "needed_capabilities", "auction", "respond_with"}


def where_said(msg: dict[str, Any]) -> str:
    """Where a message was said: its channel ("#name"), "@room", "all" for a broadcast, or its
    recipient."""
    channel = msg.get("channel")
    if isinstance(channel, str):
        return "@room" if channel == "@room" else "#" + safe_sender(channel[1:])
    return "all" if msg.get("broadcast") else safe_sender(msg.get("to") or "?")


def sender_label(msg: dict[str, Any]) -> str:
    """The sender; in the room, marked as only claimed (anyone may post under any name)."""
    who = safe_sender(msg.get("from"))
    return f"{who} (claimed)" if msg.get("channel") == "@room" and msg.get("direction") != "out" else who


def ago(at: float | None, now: float | None = None) -> str:
    """A time as a person reads it next to a message: '3m ago', 'in 4m' (rounded to the
    nearest unit, so a deferral of 30 minutes reads 'in 30m', not 'in 29m')."""
    if at is None:
        return "?"
    delta = (time.time() if now is None else now) - at
    future, delta = delta < 0, abs(delta)
    if round(delta) < 60:
        text = f"{round(delta)}s"
    elif round(delta / 60) < 60:
        text = f"{round(delta / 60)}m"
    elif round(delta / 3600) < 48:
        text = f"{round(delta / 3600)}h"
    else:
        text = f"{round(delta / 86400)}d"
    return f"in {text}" if future else f"{text} ago"


def message_time(msg: dict[str, Any]) -> float | None:
    ts = msg.get("timestamp")
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        return ts / 1000
    return msg.get("received_at") or msg.get("sent_at")


def payload_words(payload: dict[str, Any]) -> str:
    """A payload without text, compactly: known task fields as words, the rest as one-line JSON."""
    parts, shown = [], set(_QUIET_FIELDS)
    for key, shape in _WORD_FIELDS.items():
        value = payload.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            parts.append(shape.format(value))
            shown.add(key)
    needed = payload.get("needed_capabilities")
    if isinstance(needed, str):
        needed = [needed]
    if isinstance(needed, list) and needed:
        parts.append("needs " + ", ".join(str(n) for n in needed))
    if payload.get("auction"):
        parts.append("auction")
    rest = {k: v for k, v in payload.items() if k not in shown}
    if rest:
        parts.append(json.dumps(rest, separators=(",", ":"), ensure_ascii=False))
    return "; ".join(parts)


def message_text(msg: dict[str, Any]) -> str:
    text = msg.get("text")
    if isinstance(text, str):
        return text
    return payload_words(msg.get("payload") or {})


def truncate(text: str, limit: int, ref: Any) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more chars: agentcom show {ref}]"


def ref_of(msg: dict[str, Any]) -> str:
    """How a message is named on the command line: its seq, or its id when it has none."""
    return str(msg["seq"]) if msg.get("seq") is not None else safe_msg_id(msg.get("id"))


def refs_text(items: list[dict[str, Any]]) -> str:
    """`#12, #14, 3f9a0c1d2e3b4a59` (pushed messages have no seq), or `nothing`."""
    return (
        ", ".join(f"#{i['seq']}" if i.get("seq") is not None else safe_msg_id(i.get("id")) for i in items) or "nothing"
    )


def _tier0_summary(handled: dict[str, int]) -> str:
    total = sum(handled.values())
    return (
        f"Tier 0 handled {total} ({handled.get('auto_reply', 0)} auto-replied, "
        f"{handled.get('store', 0)} stored, {handled.get('drop', 0)} dropped)"
    )


# for an LLM ------------------------------------------------------------------

SAME_TEXT_MIN = 24  # shorter repeated texts cost less than naming the earlier entry


def render_prompt(result: dict[str, Any], text_limit: int = 1500, nonce: str | None = None) -> str:
    """The check result for an LLM: a one-line summary, then the fenced messages."""
    messages = result["messages"]
    head = f"[AgentCom] {len(messages)} need attention"
    head += f"; {_tier0_summary(result['handled'])}." if result.get("handled") else "."
    if result.get("pending"):
        head += f" {result['pending']} more pending."
    if not messages and result.get("in_lease"):
        head += (
            f" {result['in_lease']} returned earlier still leased (back {ago(result.get('next_due'))} unless acked)."
        )
    lines = [head]
    lines += [f"[AgentCom] warning: {unfence(neutralise(w))}" for w in result.get("warnings", [])]
    if not messages:
        return "\n".join(lines)
    entries: list[str] = []
    first_of: dict[str, str] = {}
    for msg in messages:  # a sender repeating a text word for word (a chat, then the same as a request): said once
        text = message_text(msg)
        key = f"{msg.get('from')}\0{text}"
        entries.append(_prompt_entry(msg, text_limit, first_of.get(key) if len(text) > SAME_TEXT_MIN else None))
        first_of.setdefault(key, ref_of(msg))
    return "\n".join(lines + fenced(entries, nonce))


def _prompt_entry(msg: dict[str, Any], text_limit: int | None, same_as: str | None = None) -> str:
    """`[12] loash (request, high, 3m ago): text`: the ref to type (seq, or id for a pushed
    message), the sender, then only what differs from a plain chat just received: the type
    unless chat, the priority unless normal, broadcast, what it replies to, a redelivery,
    the age once over a minute. `same_as`: the ref of an earlier entry with the same sender
    and text, named instead of repeating the text."""
    ref = ref_of(msg)
    tags = []
    if (msg.get("type") or "chat") != "chat":
        tags.append(safe_type(msg["type"]))
    if msg.get("priority") in ("urgent", "high", "low"):
        tags.append(msg["priority"])
    if isinstance(msg.get("channel"), str):
        tags.append(f"in {where_said(msg)}")
    elif msg.get("broadcast"):
        tags.append("broadcast")
    if msg.get("reply_to"):
        tags.append(f"reply to {safe_msg_id(msg['reply_to'])}")
    if msg.get("redelivered"):
        tags.append("redelivered")
    age = _age_if_old(message_time(msg))
    if age:
        tags.append(age)
    head = neutralise(f"[{ref}] {sender_label(msg)}" + (f" ({', '.join(tags)})" if tags else ""))
    text = f"(the same text as [{same_as}])" if same_as is not None else message_text(msg)
    if text_limit is not None:
        text = truncate(text, text_limit, ref)
    body = neutralise(text.replace("\r\n", "\n"), keep_newlines=True)
    # Continuation lines are indented, so content can never start a line that looks like an entry.
    return unfence(f"{head}: {body}".replace("\n", "\n  "))


def _age_if_old(at: float | None) -> str | None:
    """'3m ago' for a message over a minute old; nothing for one just received."""
    if at is None or time.time() - at < 60:
        return None
    return ago(at)


def history_prompt_entries(messages: list[dict[str, Any]], text_limit: int = 1500) -> list[str]:
    """inbox, search, thread for an LLM: one fenced entry a message (ours marked as sent)."""
    entries = []
    for m in messages:
        prefix = ""
        if m.get("direction") == "out":
            prefix = f"[sent by me to {where_said(m)}] "
            m = {**m, "from": "me", "timestamp": None, "received_at": m.get("sent_at")}
        entries.append(prefix + _prompt_entry(m, text_limit) + (f"  [{m['state']}]" if m.get("state") else ""))
    return entries


def render_history_prompt(messages: list[dict[str, Any]], text_limit: int = 1500) -> str:
    """inbox, search, thread for an LLM: a count, then the fenced entries."""
    entries = history_prompt_entries(messages, text_limit)
    return "\n".join([f"[AgentCom] {len(entries)} message(s)."] + (fenced(entries) if entries else []))


def payload_besides_text(msg: dict[str, Any]) -> str | None:
    """What `show` adds under a message that has a text: every other payload field (action,
    respond_with, channel, ...) as one line of JSON; None when there is none. The priority is
    left out (the header shows it); a payload without a text is shown whole instead."""
    payload = msg.get("payload")
    if msg.get("text") is None or not isinstance(payload, dict):
        return None
    rest = {k: v for k, v in payload.items() if k not in ("text", "priority")}
    return json.dumps(rest, ensure_ascii=False, separators=(", ", ": ")) if rest else None


def render_show_prompt(msg: dict[str, Any], nonce: str | None = None) -> str:
    """`show` for an LLM: the whole text, then the payload's other fields, inside the same
    fence as the check prompt."""
    entry = _prompt_entry(msg, None)
    rest = payload_besides_text(msg)
    if rest is not None:  # a continuation line of the entry: it cannot pose as an entry of its own
        entry += "\n  " + unfence(neutralise(f"(payload besides the text: {rest})"))
    return "\n".join([f"[AgentCom] message {ref_of(msg)}, in full:", *fenced([entry], nonce)])


# for a terminal ---------------------------------------------------------------


CONTINUATION = "    "  # continuation lines of a message, under its header: content never starts a line


def body_lines(text: str) -> str:
    """A message's text for a terminal: neutralised, its own line breaks kept, every line
    after the first indented (so no line of content can pose as a header of ours)."""
    return neutralise(text.replace("\r\n", "\n"), keep_newlines=True).replace("\n", "\n" + CONTINUATION)


def message_line(msg: dict[str, Any], text_limit: int = 200, extra: str = "") -> str:
    """One message for a terminal: ref, time, sender, type, flags, text, id on its header
    line; the text's own line breaks kept as indented continuation lines."""
    flags = []
    if msg.get("priority") in ("low", "high", "urgent"):
        flags.append(msg["priority"])
    if msg.get("redelivered"):
        flags.append(f"redelivered x{msg.get('deliveries', 2) - 1}")
    if msg.get("direction") == "out":
        who = f"me -> {where_said(msg)}"
    else:
        who = f"{sender_label(msg)} -> {where_said(msg)}"
    flag_text = f" [{', '.join(flags)}]" if flags else ""
    ref = f"#{msg['seq']} " if msg.get("seq") is not None else ""
    if msg.get("payload") is not None or msg.get("text"):
        text = body_lines(truncate(message_text(msg), text_limit, ref_of(msg)))
    else:
        text = "(body not kept)"
    head = neutralise(f"{ref}{ago(message_time(msg))} {who} {safe_type(msg.get('type') or 'chat')}{flag_text}")
    return f"{head}: {text}  " + neutralise(f"[{safe_msg_id(msg.get('id'))}{extra}]")


def render_check_text(result: dict[str, Any], text_limit: int = 200, peek: bool = False) -> str:
    lines = [message_line(msg, text_limit, f"; {msg['why']}") for msg in result["messages"]]
    if not result["messages"]:
        if result.get("in_lease"):
            lines.append(
                f"No new messages need attention; {result['in_lease']} returned earlier still leased "
                f"(back {ago(result.get('next_due'))} unless acked: `agentcom ack SEQ`)."
            )
        else:
            lines.append("No messages need attention.")
    summary = _tier0_summary(result["handled"])
    if peek:
        summary = "Peek (nothing sent or changed): " + summary.replace("auto-replied", "to auto-reply").replace(
            "Tier 0 handled", "Tier 0 would handle"
        )
    if result.get("pending"):
        summary += f"; {result['pending']} more pending"
    lines.append(summary + ".")
    lines += [f"warning: {neutralise(w)}" for w in result.get("warnings", [])]
    return "\n".join(lines)


def _log_time(at: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at if isinstance(at, (int, float)) else 0))


def render_log_text(result: dict[str, Any]) -> str:
    """`agentcom log` for a terminal: one line an entry; every field from another agent on one line."""
    lines = []
    for e in result["entries"]:
        lines.append(
            neutralise(
                f"{_log_time(e.get('received_at'))} {refs_text([e])} {safe_sender(e.get('from'))} "
                f"{safe_type(e.get('type'))}: {e.get('disposition')} ({e.get('why')}) "
            )
            + one_line(message_text(e), 120)
        )
    if not lines:
        lines.append("Tier 0 has handled nothing yet.")
    if result["roster"]:
        lines.append("Peers' latest statuses:")
        lines += [
            f"  {safe_sender(peer)}: {one_line(info.get('status'), 200)} ({status_age(info)})"
            for peer, info in sorted(result["roster"].items())
        ]
    if result["dead_letters"]:
        lines.append("Dead letters (returned too often without ack):")
        lines += [
            neutralise(
                f"  {refs_text([d])} {safe_sender(d.get('from'))} {safe_type(d.get('type'))} "
                f"after {d.get('deliveries')} deliveries: "
            )
            + one_line(message_text(d), 120)
            for d in result["dead_letters"]
        ]
    failures = [f for f in result.get("a2a_failures") or [] if f.get("said")]
    if failures:
        lines.append("A2A tasks that ended without an answer, and what the agent's side said:")
        lines += [f"  task {f.get('task')}: {one_line(f.get('said'), 300)}" for f in failures]
    lines += [f"warning: {neutralise(w)}" for w in result.get("warnings", [])]
    return "\n".join(lines)


def status_age(info: dict[str, Any]) -> str:
    """How old a peer's status is, by when it was learnt here (its status message, or the hub's
    agent list): 'as of 3m ago'."""
    at = info.get("at")
    return f"as of {ago(at)}" if isinstance(at, (int, float)) and not isinstance(at, bool) else "age unknown"


def render_log_prompt(result: dict[str, Any], text_limit: int = 300) -> str:
    """`agentcom log` for an LLM: our headings outside, notice texts and peers' statuses
    (other agents' words) inside fences."""
    lines = [f"[AgentCom] Tier 0 log: {len(result['entries'])} handled message(s), oldest first."]
    if result["entries"]:
        lines += fenced(
            [
                unfence(f"[{neutralise(str(e.get('disposition')))}: {one_line(e.get('why'), 100)}] ")
                + _prompt_entry(e, text_limit)
                for e in result["entries"]
            ]
        )
    if result["roster"]:
        lines.append("[AgentCom] Peers' latest statuses:")
        lines += fenced(
            [
                unfence(f"{safe_sender(peer)}: {one_line(info.get('status'), 200)} ({status_age(info)})")
                for peer, info in sorted(result["roster"].items())
            ]
        )
    if result["dead_letters"]:
        lines.append("[AgentCom] Dead letters (returned too often without ack):")
        lines += fenced(
            [
                _prompt_entry(d, text_limit) + f"  [dead after {d.get('deliveries')} deliveries]"
                for d in result["dead_letters"]
            ]
        )
    failures = [f for f in result.get("a2a_failures") or [] if f.get("said")]
    if failures:  # the agent's side's words, which a peer can steer: fenced
        lines.append("[AgentCom] A2A tasks that ended without an answer, and what the agent's side said:")
        lines += fenced([unfence(f"task {f.get('task')}: {one_line(f.get('said'), 300)}") for f in failures])
    lines += [f"[AgentCom] warning: {unfence(neutralise(w))}" for w in result.get("warnings", [])]
    return "\n".join(lines)


def render_agents_text(agents: list[dict[str, Any]]) -> str:
    """`agentcom agents` for a terminal: one line an agent, each of its fields on that line."""
    lines = [_agent_line(a) for a in agents]
    return "\n".join(lines) or "No agent is connected."


def render_agents_prompt(agents: list[dict[str, Any]]) -> str:
    """`agentcom agents` for an LLM: a count, then the agents (their own words) fenced."""
    head = f"[AgentCom] {len(agents)} agent(s) connected to the hub by WebSocket."
    return "\n".join([head, *fenced([unfence(_agent_line(a)) for a in agents])]) if agents else head


def _agent_line(agent: dict[str, Any]) -> str:
    name = agent.get("name")
    named = f" ({one_line(name, 60)})" if name not in (None, "", agent.get("agent_id")) else ""
    caps = agent.get("capabilities") or []
    caps_text = ", ".join(one_line(c, 40) for c in (caps[:20] if isinstance(caps, list) else [caps]))
    more = f", … {len(caps) - 20} more" if isinstance(caps, list) and len(caps) > 20 else ""
    status = one_line(agent.get("status") or "", 200)
    can = f" [can: {caps_text}{more}]" if caps_text else ""
    return f"{safe_sender(agent.get('agent_id'))}{named}: {status or '(no status)'}{can}"


def sent_line(result: dict[str, Any]) -> str:
    """What `send` and `reply` did, on one line: every id and name through the safe_* rules."""
    reply = f", reply to {safe_msg_id(result['reply_to'])}" if result.get("reply_to") else ""
    to = where_said(result) if result.get("channel") else safe_sender(result.get("to"))
    what = f"{safe_type(result.get('type') or 'chat')} to {to}{reply}"
    if result.get("confirmed") is False:  # the hub's reply was lost: its id never came back
        return f"probably sent {what} (not confirmed by the hub; not sent again)"
    return f"sent {what} (id {safe_msg_id(result.get('id'))})"


def render_sent_prompt(result: dict[str, Any]) -> str:
    """`reply` for an LLM: the line of `sent_line` inside the fence (the recipient is a name
    another agent chose, and a name can read like an order)."""
    return "\n".join(["[AgentCom] sent:", *fenced([unfence(neutralise(sent_line(result)))])])


def ack_text(result: dict[str, Any]) -> str:
    """What `ack` did here and at the hub, in words (the hub is acked only past a finished prefix)."""
    text = f"acked {refs_text(result['acked'])}"
    if result["already_finished"]:
        text += f"; already finished: {refs_text(result['already_finished'])}"
    text += f". {result['unacked']} shown and not acked. "
    if result.get("hub_acked_up_to") is not None:
        return text + f"Hub acked up to seq {result['hub_acked_up_to']}."
    waiting = result.get("hub_waiting_on")
    if any(w.startswith("could not ack the hub") for w in result.get("warnings") or []):
        return text + "The hub was not acked this time (the next check or the watch retries)."
    if waiting:
        return text + (
            f"The hub was not acked: it keeps every message from {refs_text([waiting])} on until "
            f"{refs_text([waiting])} is finished here."
        )
    return text + "Nothing at the hub needed acking."


def deferred_text(result: dict[str, Any]) -> str:
    text = f"deferred {refs_text(result['deferred'])}; back {ago(result['until'])}"
    if result.get("already_finished"):
        text += f"; already finished: {refs_text(result['already_finished'])}"
    return text


def dismissed_text(result: dict[str, Any]) -> str:
    text = f"dismissed {refs_text(result['dismissed'])}"
    if result.get("already_finished"):
        text += f"; already finished: {refs_text(result['already_finished'])}"
    return text


def status_set_text(result: dict[str, Any]) -> str:
    how = "announced by the running watch" if result["via"] == "watch" else "broadcast as a status message"
    return neutralise(f"status set: {result['status']} ({how})")


def ping_text(result: dict[str, Any]) -> str:
    """`agentcom ping`: the round trip, or what was waited for."""
    who = safe_sender(result.get("agent"))
    if result.get("pong_id") is None:
        return f"no pong from {who} within {result['timeout']:g} s (ping {safe_msg_id(result.get('ping_id'))})"
    return f"pong from {who} in {result['round_trip'] * 1000:.0f} ms (ping {safe_msg_id(result.get('ping_id'))})"


def ambiguous_ref_text(prefix: str, candidates: list[dict[str, Any]], more: bool) -> str:
    """A reference that names several messages (a short id, an id in another case than any kept,
    or `#SEQ` for a reused seq): the candidates, each on safe terms."""
    listed = ", ".join(
        f"{safe_msg_id(c.get('id'))} ({refs_text([c]) if c.get('seq') is not None else 'no seq'}, "
        f"from {safe_sender(c.get('sender'))})"
        for c in candidates
    )
    more_text = ", …" if more else ""
    if prefix.startswith("#"):  # a seq the hub gave twice (its counter went back)
        return (
            f"seq {safe_field(prefix[1:], SAFE_HEX_PREFIX)} names several open messages (the hub's seq counter went"
            f" back): {listed}{more_text}; name the one you mean by its id"
        )
    named = safe_field(prefix, SAFE_HEX_PREFIX)
    if len(prefix) >= 16:
        return f"id {named} names several messages (ids differing only in case): {listed}{more_text}; give the exact id"
    return f"id prefix {named} names several messages: {listed}{more_text}; give more digits"


def render_history_text(messages: list[dict[str, Any]], empty: str, text_limit: int = 160) -> str:
    """inbox, search, thread, sent: one line a message, with its state."""
    lines = []
    for m in messages:
        extra = f"; {m['state']}" if m.get("state") else f"; {m.get('kind')}"
        if m.get("disposition") not in (None, "attention"):
            extra += f" by Tier 0 ({m.get('disposition')}: {m.get('why')})"
        lines.append(message_line(m, text_limit, extra))
    return "\n".join(lines) or empty


def render_show_text(msg: dict[str, Any]) -> str:
    """`show` for a terminal: a header line, then the whole text, neutralised and indented."""
    text = msg["text"] if msg.get("text") is not None else json.dumps(msg.get("payload"), ensure_ascii=False, indent=2)
    ref = f"#{msg['seq']} " if msg.get("seq") is not None else ""
    flags = f" [{msg['priority']}]" if msg.get("priority") in ("low", "high", "urgent") else ""
    who = f"{sender_label(msg)} -> {where_said(msg)}"
    head = f"{ref}{ago(message_time(msg))} {who} {safe_type(msg.get('type') or 'chat')}{flags}"
    head += f"  [{safe_msg_id(msg.get('id'))}; {msg.get('state')}]"
    rest = payload_besides_text(msg)
    fields = "" if rest is None else "\n" + CONTINUATION + neutralise(f"payload besides the text: {rest}")
    return neutralise(head) + fields + "\n" + CONTINUATION + body_lines(text)


def render_channels_text(result: dict[str, Any]) -> str:
    """`agentcom channels` for a person: one line a channel, then the room."""
    lines = []
    for c in result["channels"]:
        where = where_said({"channel": c["name"]})
        count = f", {c['subscribers']} subscribed" if c.get("subscribers") is not None else ""
        joined = f"joined (attend {safe_type(c['attend'])})" if c.get("joined") else "not joined"
        about = neutralise(str(c.get("description") or ""))[:80]
        lines.append(f"{where}: {joined}{count}" + (f" - {about}" if about else ""))
    return "\n".join(lines)


def render_status_text(st: dict[str, Any]) -> str:
    """`agentcom status` for a person: what a glance needs, times as ages."""
    hub = st.get("hub") or {}
    acked = f" (acked up to seq {st['hub_acked']})" if st.get("hub_acked") is not None else ""
    if hub.get("error"):
        hub_line = (
            f"hub: unreachable: {hub['error']['message']}"
            if hub["error"]["kind"] in ("hub_unavailable", "rate_limited")
            else f"hub: {hub['error']['kind']} error: {hub['error']['message']}"
        )
        hub_line += (
            f"; last successful contact {ago(hub['last_contact'])}"
            if hub.get("last_contact")
            else "; never reached from here"
        )
    else:
        hub_line = (
            f"hub: {'ok' if hub.get('ok') else 'NOT OK'}, {hub.get('agents_connected')} agent(s) connected by "
            f"WebSocket; "
            f"{st.get('mailbox')} message(s) in our mailbox there{acked}"
        )
    lines = [
        f"{st['agent_id']} at {st['hub_url']} (token {st.get('token')}); state in {st['state_dir']}",
        f"messages: {st['pending']} pending, {st['in_lease']} shown and leased, {st['deferred']} deferred, "
        f"{st['dead_letters']} dead letter(s); {st['stored']} kept here",
        f"my status: {st.get('status')}",
        hub_line,
    ]
    if st.get("groups"):
        joined = ", ".join(f"{where_said({'channel': g})} ({safe_type(a)})" for g, a in st["groups"].items())
        lines.append(f"joined: {joined}")
    watch = st.get("watch")
    if watch:
        connected = f"connected {ago(watch['connected_since'])}" if watch.get("connected_since") else "NOT connected"
        lines.append(
            f"watch: running (pid {watch.get('pid')}), {connected}; {watch.get('wakes_sent', 0)} wake(s) sent, "
            f"{watch.get('reconnects', 0)} reconnect(s); last event {ago(watch.get('last_event_at'))}: "
            f"{watch.get('last_event')}"
        )
        a2a = watch.get("a2a")
        if a2a:
            last = a2a.get("last_failure") or {}
            lines.append(
                f"a2a: {a2a.get('in_flight', 0)} task(s) in flight, {a2a.get('answered', 0)} answer(s) sent back, "
                f"{a2a.get('no_reply', 0)} without an answer, {a2a.get('failed', 0)} failed"
                + (f", {a2a['maybe_answered']} possibly sent" if a2a.get("maybe_answered") else "")
                + (
                    f" (last {ago(last.get('at'))}: {last.get('outcome')}: {str(last.get('error'))[:160]})"
                    if last
                    else ""
                )
                + (f", {a2a['held']} held for check by the loop guard" if a2a.get("held") else "")
            )
        error = watch.get("last_wake_error")
        if error and error.get("cleared_at"):  # an uncleared one is a hazard, below
            lines.append(
                f"last wake error {ago(error.get('at'))} (wakes work again since {ago(error['cleared_at'])}): "
                f"{str(error.get('detail'))[:200]}"
            )
    else:
        lines.append("watch: not running (check polls the hub)")
    lines += [f"hazard: {h}" for h in st.get("hazards") or []] or ["hazards: none"]
    return neutralise("\n".join(lines), keep_newlines=True)


def render_mapping(data: dict[str, Any]) -> str:
    """A flat `key: value` listing (status, config show), values neutralised; what is unset
    (None) is left out."""
    lines = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items() if v is not None)
        elif isinstance(value, list):
            value = "; ".join(str(v) for v in value) if value else "none"
        lines.append(neutralise(f"{key}: {value}"))
    return "\n".join(lines)


def render_doctor_text(result: dict[str, Any]) -> str:
    """`agentcom doctor` for a person: one line a check, with what to do when it is not ok."""
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "--  "}
    lines = []
    for check in result["checks"]:
        line = f"{check['check']}: {check['detail']}"
        if check["outcome"] in ("warn", "fail") and check.get("fix"):
            line += f" -> {check['fix']}"
        lines.append(f"{marks.get(check['outcome'], '?   ')}  {neutralise(' '.join(line.split()))}")
    code = result["exit_code"]
    lines.append("everything needed works" if code == 0 else f"exit {code}: the first failure above")
    return "\n".join(lines)
