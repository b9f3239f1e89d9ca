"""`agentcom check`: the command most runs are (a heartbeat's), so it sits alone in its module."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from ..actions import check as check_actions
from ..render import render_check_text, render_prompt
from .base import CliContext, cli_obj, command, emit, format_options, one_line, output_format


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
    result = check_actions.check(limit=limit, peek=peek, emit=printer, settings=settings)
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
