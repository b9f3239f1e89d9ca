"""Commands that read what is kept here (and who is online): show, inbox, thread, search, sent, log, agents."""

from __future__ import annotations

from typing import Any

import click

from ..actions import history as history_actions
from ..actions import status as status_actions
from ..delivery import STATES
from ..render import (
    render_agents_prompt,
    render_agents_text,
    render_history_prompt,
    render_history_text,
    render_log_prompt,
    render_log_text,
    render_show_prompt,
    render_show_text,
)
from ..tier0 import DISPOSITIONS
from .base import (
    cli_obj,
    command,
    emit_formatted,
    format_options,
    output_format,
    parse_duration,
)


@command(
    examples="""
agentcom show 12
agentcom show 3f9a0c1d2e3b4a59 --json
"""
)
@click.argument("ref", metavar="REF")
@format_options
@click.pass_context
def show(ctx: click.Context, ref: str, as_json: bool, fmt: str | None) -> None:
    """Show one stored message in full (also after an ack)."""
    fmt = output_format(fmt, as_json)
    msg = history_actions.show(ref, settings=cli_obj(ctx).settings())
    emit_formatted(msg, fmt, lambda: render_show_text(msg), lambda: render_show_prompt(msg))


def emit_history(result: dict[str, Any], fmt: str, empty: str) -> None:
    emit_formatted(
        result,
        fmt,
        lambda: render_history_text(result["messages"], empty),
        lambda: render_history_prompt(result["messages"]),
    )


@command(
    examples="""
agentcom inbox
agentcom inbox --from loash --since 2h
agentcom inbox --state shown     # returned and not yet acked
agentcom inbox --state dead      # dead letters
agentcom inbox --channel '#research'   # what was said there (chatter included)
"""
)
@click.option("--from", "sender", metavar="AGENT", help="Only from this sender.")
@click.option("--channel", metavar="WHERE", help="Only said in this channel ('#name') or the room ('@room').")
@click.option("--type", "type_", metavar="TYPE", help="Only this message type.")
@click.option(
    "--state",
    type=click.Choice(STATES),
    help="Only in this state.",
)
@click.option("--since", metavar="DURATION", help="Only received in the last DURATION (30m, 2h, 1d).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@format_options
@click.pass_context
def inbox(
    ctx: click.Context,
    sender: str | None,
    type_: str | None,
    state: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
    fmt: str | None,
    channel: str | None,
) -> None:
    """Recent messages of every kind and state, newest first."""
    seconds = parse_duration(since, "--since") if since else None
    result = history_actions.inbox(sender, type_, state, seconds, limit, channel, settings=cli_obj(ctx).settings())
    filtered = any(f is not None for f in (sender, type_, state, since, channel))
    empty = "No kept message matches." if filtered else "No messages kept here yet."
    emit_history(result, output_format(fmt, as_json), empty)


@command(
    examples="""
agentcom thread 12
"""
)
@click.argument("ref", metavar="REF")
@format_options
@click.pass_context
def thread(ctx: click.Context, ref: str, as_json: bool, fmt: str | None) -> None:
    """A message with its replies and what it answers, in time order."""
    result = history_actions.thread(ref, settings=cli_obj(ctx).settings())
    emit_history(result, output_format(fmt, as_json), "Nothing in this thread.")


@command(
    examples="""
agentcom search "rate limiter"
agentcom search loash --limit 5
"""
)
@click.argument("text")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@format_options
@click.pass_context
def search(ctx: click.Context, text: str, limit: int, as_json: bool, fmt: str | None) -> None:
    """Find stored messages by words in their text or sender."""
    result = history_actions.search(text, limit, settings=cli_obj(ctx).settings())
    emit_history(result, output_format(fmt, as_json), "No stored message matches.")


@command(
    examples="""
agentcom sent --limit 5
"""
)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@format_options
@click.pass_context
def sent(ctx: click.Context, limit: int, as_json: bool, fmt: str | None) -> None:
    """Messages this agent sent, auto-replies included, newest first."""
    fmt = output_format(fmt, as_json)
    result = history_actions.sent(limit, settings=cli_obj(ctx).settings())
    emit_history(result, fmt, "Nothing sent yet.")


@command(
    examples="""
agentcom agents
agentcom agents --format prompt   # for an LLM: their names and statuses fenced
"""
)
@format_options
@click.pass_context
def agents(ctx: click.Context, as_json: bool, fmt: str | None) -> None:
    """Who is online (connected to the hub by WebSocket)."""
    fmt = output_format(fmt, as_json)
    result = status_actions.agents(settings=cli_obj(ctx).settings())
    emit_formatted(
        result, fmt, lambda: render_agents_text(result["agents"]), lambda: render_agents_prompt(result["agents"])
    )


@command(
    examples="""
agentcom log
agentcom log --disposition drop --limit 10
"""
)
@click.option("--disposition", type=click.Choice(DISPOSITIONS), help="Only this disposition.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Newest N entries.")
@format_options
@click.pass_context
def log(ctx: click.Context, disposition: str | None, limit: int, as_json: bool, fmt: str | None) -> None:
    """What Tier 0 handled and why; peers' statuses; dead letters."""
    fmt = output_format(fmt, as_json)
    obj = cli_obj(ctx)
    settings = obj.settings()
    result = history_actions.log(disposition, limit, settings=settings)
    emit_formatted(
        result,
        fmt,
        lambda: render_log_text(result),
        lambda: render_log_prompt(result, min(300, settings.prompt_text_limit)),
    )
