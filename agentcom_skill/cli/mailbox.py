"""Commands that take messages from the mailbox and finish them: check, wait, ack, defer, dismiss."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from .. import skill
from ..render import (
    ack_text,
    deferred_text,
    dismissed_text,
    render_check_text,
    render_prompt,
)
from .base import (
    CliContext,
    cli_obj,
    command,
    emit,
    format_options,
    json_option,
    one_line,
    output_format,
    parse_duration,
)


@command(
    examples="""
agentcom check                  # for a person
agentcom check --json           # for a program
agentcom check --format prompt  # for an LLM, fenced as untrusted content
agentcom check --cron           # NO_REPLY when nothing needs attention
"""
)
@format_options
@click.option(
    "--limit",
    "--max",
    "limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="Return at most N messages; the rest stay pending.",
)
@click.option("--peek", is_flag=True, help="Show what would be returned; change and send nothing.")
@click.option(
    "--cron",
    is_flag=True,
    help="For cron and heartbeat jobs: NO_REPLY when nothing needs attention, else the prompt rendering.",
)
@click.option("--exit-code", is_flag=True, help="Exit 1 when messages need attention.")
@click.pass_context
def check(
    ctx: click.Context, as_json: bool, fmt: str | None, limit: int | None, peek: bool, cron: bool, exit_code: bool
) -> None:
    """Poll the mailbox; print only the messages that need the agent."""
    obj = cli_obj(ctx)
    settings = obj.settings()
    fmt = output_format(fmt or ("prompt" if cron and not as_json else None), as_json)
    printer = check_emitter(obj, fmt, settings.prompt_text_limit, cron=cron, peek=peek)
    result = skill.check(limit=limit, peek=peek, emit=printer, settings=settings)
    if exit_code and result["messages"]:
        sys.exit(1)


def check_emitter(
    obj: CliContext, fmt: str, text_limit: int, cron: bool = False, peek: bool = False
) -> Callable[[dict[str, Any]], None]:
    """Print a check result (check, wait) for its audience, before the delivery is confirmed."""

    def print_result(result: dict[str, Any]) -> None:
        if peek:
            result = {**result, "peek": True}
        if fmt == "json":
            emit(result, True)
        elif cron and not result["messages"]:
            click.echo("NO_REPLY")
            for warning in result["warnings"]:  # hazards still reach the cron log
                click.echo(f"agentcom: warning: {one_line(warning)}", err=True)
        elif fmt == "prompt":
            click.echo(render_prompt(result, text_limit))
        else:
            click.echo(render_check_text(result, peek=peek))
        sys.stdout.flush()  # out before the delivery is confirmed in the store
        obj.emitted = True

    return print_result


@command(
    examples="""
agentcom wait --timeout 600 && echo "something needs me"
agentcom wait --format prompt
"""
)
@click.option(
    "--timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS", help="Give up after this long (exit 1)."
)
@click.option("--limit", "--max", "limit", type=click.IntRange(min=1), metavar="N", help="Return at most N messages.")
@format_options
@click.pass_context
def wait(ctx: click.Context, timeout: float | None, limit: int | None, as_json: bool, fmt: str | None) -> None:
    """Block until something needs attention; print it like check."""
    obj = cli_obj(ctx)
    settings = obj.settings()
    printer = check_emitter(obj, output_format(fmt, as_json), settings.prompt_text_limit)
    if skill.wait(timeout, limit, emit=printer, settings=settings) is None:
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
    result = skill.ack(list(refs), ids=ids, through=through, settings=cli_obj(ctx).settings())
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
    result = skill.defer(list(refs), parse_duration(for_, "--for"), settings=cli_obj(ctx).settings())
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
    result = skill.dismiss(list(refs), settings=cli_obj(ctx).settings())
    emit(result, as_json, dismissed_text(result))
