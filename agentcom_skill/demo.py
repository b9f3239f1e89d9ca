"""`agentcom demo`: an end-to-end tour on an embedded hub in a temporary folder."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Callable

from . import skill
from .client import HubClient
from .config import load_settings
from .render import render_check_text, render_log_text, render_prompt

# (sender, to, type, payload): a small slice of a realistic day.
TRAFFIC = [
    ("loash", "gcu", "chat", {"text": "I pushed a fix for goal backlog ordering, could you review?"}),
    ("nathan", "gcu", "request", {"action": "ping"}),
    ("nathan", "gcu", "request", {"action": "ping"}),
    ("skaffen", "gcu", "request", {"action": "status", "respond_with": "structured"}),
    ("ocean-ai", "broadcast", "status", {"status": "deploying staging"}),
    ("nathan", "gcu", "chat", {"action": "notify", "text": "FYI: merged rate limiter config"}),
    ("skaffen", None, "request", {"text": "Need help with the heartbeat reaper", "needed_capabilities": ["rust"]}),
    ("flere-imsaho", "broadcast", "request", {"text": "Who can review the Elixir supervisor tree?", "needed_capabilities": ["elixir"]}),
    ("spammy-bot", "gcu", "chat", {"text": "BUY NOW \x1b[31mcheap tokens\x1b[0m"}),
    ("loash", "gcu", "delegate", {"task_id": "task-071", "title": "Fix DETS compaction", "priority": "urgent"}),
    ("loash", "gcu", "progress", {"task_id": "task-067", "percent": 80, "note": "tests green"}),
]


def run_demo(echo: Callable[[str], None] = print) -> None:
    from .hub.server import HubServer
    from .hub.store import HubStore

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
    echo(f"Embedded hub at {url}. Agents: gcu (us) and five peers.")
    tokens = {name: store.mint_token(name) for name in ["gcu", "loash", "nathan", "skaffen", "ocean-ai", "flere-imsaho", "spammy-bot"]}
    for sender, to, type_, payload in TRAFFIC:
        with HubClient(url, tokens[sender]) as hub:
            hub.send(to, type_, payload)
    echo(f"{len(TRAFFIC)} messages sent to gcu: chat, pings, a status request, presence, notifications, broadcasts.\n")

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
    echo("$ agentcom check")
    result = skill.check(settings=settings)
    echo(render_check_text(result))
    echo("\n$ agentcom check --format prompt   (what an LLM would read)")
    echo(render_prompt(result, settings.prompt_text_limit))

    echo("\n$ agentcom log   (what Tier 0 handled, and why)")
    echo(render_log_text(skill.log(settings=settings)))

    with HubClient(url, tokens["nathan"]) as hub:
        pongs = [m for m in hub.poll("nathan").messages if m.payload.get("action") == "pong"]
    echo(f"\nnathan pinged twice and got {len(pongs)} pong (coalesced), without any LLM.")

    first = result["messages"][0]
    echo(f"\n$ agentcom send {first['from']} 'On it.' --reply-to {first['id']}")
    sent = skill.send(first["from"], "On it.", reply_to=first["id"], settings=settings)
    echo(sent["id"])
    echo("\n$ agentcom ack")
    acked = skill.ack(settings=settings)
    echo(f"acked {len(acked['acked'])} message(s); hub acked up to seq {acked['hub_acked_up_to']}")
    echo("\n$ agentcom check")
    echo(render_check_text(skill.check(settings=settings)))
