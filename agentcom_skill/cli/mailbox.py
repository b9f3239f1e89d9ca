"""Commands that wait for messages and finish them: wait, ack, defer, dismiss."""

from __future__ import annotations

import sys

import click

from ..actions import check as check_actions
from ..actions import finish as finish_actions
from ..render import ack_text, deferred_text, dismissed_text
from .base import FiniteRange, cli_obj, command, emit, format_options, json_option, output_format, parse_duration
from .check import check_emitter


@command(
    examples="""
agentcom wait --timeout 600 && echo "something needs me"
agentcom wait --format prompt
"""
)
@click.option(
    "--timeout", type=FiniteRange(min=0), default=None, metavar="SECONDS", help="Give up after this long (exit 1)."
)
@click.option("--limit", "--max", "limit", type=click.IntRange(min=1), metavar="N", help="Return at most N messages.")
@format_options
@click.pass_context
def wait(ctx: click.Context, timeout: float | None, limit: int | None, as_json: bool, fmt: str | None) -> None:
    """Block until something needs attention; print it like check."""
    obj = cli_obj(ctx)
    settings = obj.settings()
    printer = check_emitter(obj, output_format(fmt, as_json), settings.prompt_text_limit)
    if check_actions.wait(timeout, limit, emit=printer, settings=settings) is None:
        sys.exit(1)


@command(
    examples="""
agentcom ack 12            # done with #12 (only that one)
agentcom ack 12 14 15
agentcom ack --id 3f9a0c1d2e3b4a59
agentcom ack --through 15  # every shown message up to #15
agentcom ack               # every message shown so far
"""
)
@click.argument("refs", nargs=-1, metavar="[REF]...")
@click.option(
    "--id", "ids", multiple=True, metavar="ID", help="A message id or unique id prefix, never a seq (repeat)."
)
@click.option("--through", type=int, metavar="SEQ", help="Every shown message with seq up to SEQ.")
@json_option
@click.pass_context
def ack(ctx: click.Context, refs: tuple[str, ...], ids: tuple[str, ...], through: int | None, as_json: bool) -> None:
    """Finish the messages named (none named: all shown)."""
    result = finish_actions.ack(list(refs), ids=ids, through=through, settings=cli_obj(ctx).settings())
    emit(result, as_json, ack_text(result))


@command(
    examples="""
agentcom defer 12 --for 30m
agentcom defer 12 14 --for 2h
"""
)
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@click.option("--for", "for_", default="30m", show_default=True, metavar="DURATION", help="How long: 90s, 30m, 2h, 1d.")
@json_option
@click.pass_context
def defer(ctx: click.Context, refs: tuple[str, ...], for_: str, as_json: bool) -> None:
    """Put shown messages aside; they come back after --for."""
    result = finish_actions.defer(list(refs), parse_duration(for_, "--for"), settings=cli_obj(ctx).settings())
    emit(result, as_json, deferred_text(result))


@command(
    examples="""
agentcom dismiss 12
"""
)
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@json_option
@click.pass_context
def dismiss(ctx: click.Context, refs: tuple[str, ...], as_json: bool) -> None:
    """Finish messages without acting on them (kept in the history)."""
    result = finish_actions.dismiss(list(refs), settings=cli_obj(ctx).settings())
    emit(result, as_json, dismissed_text(result))
