"""Commands that send: send, reply, ping."""

from __future__ import annotations

import json
import sys

import click

from ..actions import send as send_actions
from ..errors import UsageError
from ..message import PRIORITIES, RESPOND_WITH
from ..render import ping_text, render_sent_prompt, sent_line
from .base import (
    FiniteRange,
    cli_obj,
    command,
    emit,
    emit_formatted,
    format_options,
    json_option,
    output_format,
    read_text,
)

_SEND_EXAMPLES = """
agentcom send loash "Could you review PR 12?"
agentcom send broadcast "Who knows Elixir?" --needs elixir
echo "long report" | agentcom send loash -
agentcom send loash --text-file report.md --priority high
agentcom send loash --type request --payload '{"action": "query", "respond_with": "structured"}'
agentcom send '#research' "Anyone read the new paper?"   # publish in a channel
agentcom send @room "Back in 10 minutes"                 # post in the hub's room
"""


@command(examples=_SEND_EXAMPLES)
@click.argument("to")
@click.argument("text", required=False)
@click.option("--text-file", metavar="PATH", help="Read the text from a file.")
@click.option("--type", "type_", metavar="TYPE", help="Message type (default chat; request, response, status, ...).")
@click.option("--reply-to", metavar="ID", help="Id of the message this answers (or use `agentcom reply`).")
@click.option("--priority", type=click.Choice(PRIORITIES), help="payload.priority.")
@click.option(
    "--needs", "needs", multiple=True, metavar="CAP", help="A capability the receiver needs (repeat); for broadcasts."
)
@click.option(
    "--respond-with",
    type=click.Choice(RESPOND_WITH),
    help="payload.respond_with; none: fire and forget.",
)
@click.option("--payload", metavar="JSON", help="A JSON object merged into the payload.")
@json_option
@click.pass_context
def send(
    ctx: click.Context,
    to: str,
    text: str | None,
    text_file: str | None,
    type_: str | None,
    reply_to: str | None,
    priority: str | None,
    needs: tuple[str, ...],
    respond_with: str | None,
    payload: str | None,
    as_json: bool,
) -> None:
    """Send TEXT to an agent, everyone, a channel or the room.

    TO is an agent id, broadcast (everyone), '#name' (a channel) or @room (the hub's room,
    a text only)."""
    parsed = None
    if payload is not None:
        try:
            parsed = json.loads(payload)
        except ValueError as exc:
            raise UsageError(f"--payload is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise UsageError('--payload must be a JSON object, like \'{"priority": "high"}\'')
    body = read_text(text, text_file, allow_stdin=parsed is None)
    result = send_actions.send(
        to,
        body,
        type_,
        reply_to,
        parsed,
        priority=priority,
        needs=needs,
        respond_with=respond_with,
        settings=cli_obj(ctx).settings(),
    )
    emit(result, as_json, sent_line(result))


@command(
    examples="""
agentcom reply 12 "On it."
agentcom reply 3f9a0c1d2e3b4a59 "Done, see PR 14."
agentcom reply 12 - < answer.txt
"""
)
@click.argument("ref", metavar="REF")
@click.argument("text", required=False)
@click.option("--text-file", metavar="PATH", help="Read the text from a file.")
@format_options
@click.pass_context
def reply(
    ctx: click.Context, ref: str, text: str | None, text_file: str | None, as_json: bool, fmt: str | None
) -> None:
    """Answer a message where it was said.

    TEXT goes to its sender as a response to it, in its channel (replying to it), or in the
    room (naming its sender)."""
    fmt = output_format(fmt, as_json)
    body = read_text(text, text_file, allow_stdin=True)
    result = send_actions.reply(ref, body or "", settings=cli_obj(ctx).settings())
    emit_formatted(result, fmt, lambda: sent_line(result), lambda: render_sent_prompt(result))


@command(
    examples="""
agentcom ping bob                  # pong from bob in 35 ms
agentcom ping bob --timeout 600    # a peer without a watch answers at its next check
"""
)
@click.argument("agent")
@click.option(
    "--timeout",
    type=FiniteRange(min=0, min_open=True, max=86400),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the pong (exit 1 without one).",
)
@json_option
@click.pass_context
def ping(ctx: click.Context, agent: str, timeout: float, as_json: bool) -> None:
    """Ping AGENT and print the round trip of its pong.

    Waiting takes nothing from your own mailbox: messages that arrive meanwhile are stored
    for `check`, never shown here. Exit 1 when no pong came within --timeout.
    """
    result = send_actions.ping(agent, timeout, settings=cli_obj(ctx).settings())
    if result["pong_id"] is None:
        if as_json:
            emit(result, True)
        else:
            emit({"warnings": result["warnings"]}, False)
            click.echo(f"agentcom: {ping_text(result)}", err=True)
        sys.exit(1)
    emit(result, as_json, ping_text(result))
