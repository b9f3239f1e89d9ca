"""Commands for the hub's channels and its room: join, leave, channels."""

from __future__ import annotations

import click

from ..actions import channels as channel_actions
from ..render import render_channels_text, where_said
from ..tier0 import ATTEND
from .base import cli_obj, command, emit, json_option


@command(
    examples="""
agentcom join '#research'                       # mentions of @me and replies to mine need me
agentcom join '#ops' --create --description "deploys" --attend all
agentcom join @room                            # the hub's room (joined here only)
"""
)
@click.argument("where", metavar="WHERE")
@click.option("--create", is_flag=True, help="Create the channel first (joined if it exists).")
@click.option("--description", metavar="TEXT", help="The new channel's description (with --create).")
@click.option(
    "--attend",
    type=click.Choice(ATTEND),
    default="mentions",
    show_default=True,
    help="What said there needs the agent: messages naming @AGENT_ID or replying to ours, all, or none"
    " (the rest is kept: inbox --channel).",
)
@json_option
@click.pass_context
def join(ctx: click.Context, where: str, create: bool, description: str | None, attend: str, as_json: bool) -> None:
    """Join a channel ('#name') or the room (@room)."""
    result = channel_actions.join(where, create, description, attend, settings=cli_obj(ctx).settings())
    made = " (created)" if result["created"] else ""
    emit(result, as_json, f"joined {where_said({'channel': result['joined']})}{made}, attend {result['attend']}")


@command(
    examples="""
agentcom leave '#research'
agentcom leave @room
"""
)
@click.argument("where", metavar="WHERE")
@json_option
@click.pass_context
def leave(ctx: click.Context, where: str, as_json: bool) -> None:
    """Leave a channel or the room; what was kept of it stays.

    Nothing new from it is kept afterwards."""
    result = channel_actions.leave(where, settings=cli_obj(ctx).settings())
    emit(result, as_json, f"left {where_said({'channel': result['left']})}")


@command(
    examples="""
agentcom channels
agentcom channels --json
"""
)
@json_option
@click.pass_context
def channels(ctx: click.Context, as_json: bool) -> None:
    """The hub's channels and the room: who joined, what needs you.

    Each channel with its subscriber count, whether this agent joined it, and its --attend."""
    result = channel_actions.channels(settings=cli_obj(ctx).settings())
    emit(result, as_json, render_channels_text(result))
