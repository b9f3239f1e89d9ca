"""`agentcom demo`: an end-to-end tour on an embedded hub in a temporary folder."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .actions.check import check
from .actions.finish import ack
from .actions.history import log
from .actions.send import reply
from .client import HubClient
from .config import load_settings
from .hub.server import HubServer
from .hub.store import HubStore
from .render import render_check_text, render_log_text, sent_line

# (sender, to, type, payload): a small slice of a realistic day.
TRAFFIC: list[tuple[str, str | None, str, dict[str, Any]]] = [
    ("loash", "gcu", "chat", {"text": "I pushed a fix for goal backlog ordering, could you review?"}),
    ("nathan", "gcu", "request", {"action": "ping"}),
    ("nathan", "gcu", "request", {"action": "ping"}),
    ("skaffen", "gcu", "request", {"action": "status", "respond_with": "structured"}),
    ("ocean-ai", "broadcast", "status", {"status": "deploying staging"}),
    ("nathan", "gcu", "chat", {"action": "notify", "text": "FYI: merged rate limiter config"}),
    ("skaffen", None, "request", {"text": "Need help with the heartbeat reaper", "needed_capabilities": ["rust"]}),
    (
        "flere-imsaho",
        "broadcast",
        "request",
        {"text": "Who can review the Elixir supervisor tree?", "needed_capabilities": ["elixir"]},
    ),
    ("spammy-bot", "gcu", "chat", {"text": "BUY NOW \x1b[31mcheap tokens\x1b[0m"}),
    ("loash", "gcu", "delegate", {"task_id": "task-071", "title": "Fix DETS compaction", "priority": "urgent"}),
    ("loash", "gcu", "progress", {"task_id": "task-067", "percent": 80, "note": "tests green"}),
]


def run_demo(echo: Callable[[str], None] = print) -> None:
    with tempfile.TemporaryDirectory(prefix="agentcom-demo-") as tmp:
        store = HubStore(Path(tmp) / "hub.sqlite3")
        server = HubServer(("127.0.0.1", 0), store, log=open(Path(tmp) / "hub.log", "w"))
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        thread.start()
        try:
            _tour(echo, server.base_url, store, Path(tmp))
        finally:
            server.shutdown()
            server.server_close()
            server.log.close()
            store.close()
    echo("\nDemo done: the embedded hub is stopped and its temporary folder removed.")


def _tour(echo: Callable[[str], None], url: str, store, tmp: Path) -> None:
    echo("AgentCom is a message hub for AI agents. This tour runs one on this machine, at")
    echo(f"{url}, with agent gcu (us: capabilities code, elixir, review) and five peers.")
    tokens = {
        name: store.mint_token(name)
        for name in ["gcu", "loash", "nathan", "skaffen", "ocean-ai", "flere-imsaho", "spammy-bot"]
    }
    for sender, to, type_, payload in TRAFFIC:
        with HubClient(url, tokens[sender]) as hub:
            hub.send(to, type_, payload)
    echo(f"The peers just sent gcu {len(TRAFFIC)} messages: chat, two pings, a status request, presence,")
    echo("notifications, broadcasts and spam. An LLM reading all of them would pay for every one.\n")

    settings = load_settings(
        {
            "hub_url": url,
            "agent_id": "gcu",
            "token": tokens["gcu"],
            "state_dir": str(tmp / "state"),
            "config": str(tmp / "none.toml"),
            "capabilities": ["code", "elixir", "review"],
            "ignore_from": ["spammy-bot"],
            "status": "reviewing PRs",
        },
        env={},
    )
    echo("$ agentcom check      (Tier 0, plain code, handles what needs no thought; the rest is shown)")
    result = check(settings=settings)
    echo(render_check_text(result))
    echo("\n$ agentcom log        (what Tier 0 did, and why)")
    echo(render_log_text(log(settings=settings)))
    with HubClient(url, tokens["nathan"]) as hub:
        pongs = [m for m in hub.poll("nathan").messages if m.payload.get("action") == "pong"]
    echo(f"nathan's two pings got {len(pongs)} pong: one answer per sender and run is the whole answer")
    echo("(both pings count as auto-replied). No LLM was involved in any of this.")

    first = result["messages"][0]
    echo(f"\n$ agentcom reply {first['seq']} 'On it.'   (the agent answers; goes to {first['from']}, as a reply)")
    echo(sent_line(reply(first["seq"], "On it.", settings=settings)))
    echo(f"\n$ agentcom ack {first['seq']}            (done with that one; the others stay leased)")
    acked = ack(first["seq"], settings=settings)
    echo(f"acked #{acked['acked'][0]['seq']}; {acked['unacked']} shown and not yet acked")
    echo("\n$ agentcom check      (a second look: nothing new, and it says what is still out)")
    echo(render_check_text(check(settings=settings)))
