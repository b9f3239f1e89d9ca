"""Commands about the running setup: status, watch, mcp, doctor, config, demo, help, completion."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from click.shell_completion import get_completion_class

from ..actions import config_init as config_actions
from ..actions import status as status_actions
from ..errors import ConfigError, UsageError
from ..render import (
    render_doctor_text,
    render_mapping,
    render_status_text,
    status_set_text,
)
from . import main
from .base import CONTEXT, cli_obj, command, emit, global_options, json_option

# the MCP server's tools, for --tools's help (its module loads the SDK: named here, checked by a test)
MCP_TOOLS = "check, send, reply, ack, defer, show, thread, search, status"


@click.group(
    invoke_without_command=True,
    context_settings=CONTEXT,
    epilog='\b\nExamples:\n  agentcom status\n  agentcom status --json\n  agentcom status set "reviewing PR 12"',
)
@global_options
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Hub health, pending and leased messages, the watch, hazards."""
    if ctx.invoked_subcommand is not None:
        return
    result = status_actions.status(settings=cli_obj(ctx).settings())
    emit(result, as_json, render_status_text(result))
    if result["hub"]["error"]:  # everything local was printed; the hub's trouble is the exit code
        sys.exit(result["hub"]["error"]["exit_code"])


@command(
    status,
    "set",
    examples="""
agentcom status set "reviewing PR 12"
""",
)
@click.argument("text")
@json_option
@click.pass_context
def status_set(ctx: click.Context, text: str, as_json: bool) -> None:
    """Set my status (auto-replies, and the hub's presence)."""
    result = status_actions.set_status(text, settings=cli_obj(ctx).settings())
    emit(result, as_json, status_set_text(result))


@command(
    examples="""
agentcom watch                # one line per event on stderr
agentcom watch --jsonl        # and a JSON object per event on stdout
"""
)
@click.option("--jsonl", is_flag=True, help="Also print each event as one JSON object on stdout.")
@click.option(
    "--parent-pid",
    type=click.IntRange(min=1),
    metavar="PID",
    help="Stop when the parent process is no longer PID (a supervisor killed hard, as the OpenClaw plugin's gateway).",
)
@click.pass_context
def watch(ctx: click.Context, jsonl: bool, parent_pid: int | None) -> None:
    """Hold the hub's WebSocket; handle and wake in real time.

    SIGHUP reads the config again and takes up its [wake] table (`kill -HUP PID`); other
    settings change at a restart."""
    from ..watch import run_watch

    obj = cli_obj(ctx)
    sys.exit(run_watch(obj.settings(), jsonl, reload=obj.settings, parent_pid=parent_pid))


@command(
    examples="""
agentcom mcp                        # for an MCP client: command "agentcom", args ["mcp"]
agentcom mcp --tools check,reply,ack
"""
)
@click.option(
    "--tools",
    metavar="LIST",
    is_flag=False,
    flag_value="",
    help=f"Comma-separated tools to expose, of: {MCP_TOOLS} [default: all]. Alone: list them and exit.",
)
@click.pass_context
def mcp(ctx: click.Context, tools: str | None) -> None:
    """Serve this mailbox to an MCP client over stdio.

    A setup that is not complete (no token, say) still answers `initialize`: the error comes
    back from each tool call, so the client shows it, and the fixed config is read at the next call."""
    from ..mcpserver import TOOLS, run_mcp

    if tools == "":
        for name, (description, _) in TOOLS.items():
            click.echo(f"{name:8} {description}")
        return
    names = [t.strip() for t in tools.split(",") if t.strip()] if tools else None
    obj = cli_obj(ctx)
    try:
        settings = obj.settings()
    except ConfigError:
        settings = None  # reported through the MCP connection, where the client shows it
    sys.exit(run_mcp(settings, names, obj.settings))


@command(
    examples="""
agentcom doctor          # one line a check, with what to do
agentcom doctor --json
"""
)
@json_option
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check the setup step by step and say what to fix.

    In order: the config file, the hub (through the proxy if one is set) and its health, the
    token, the state folder and store, a live watch, the wake endpoint and its token, the
    OpenClaw skill. Exits 0 when everything needed works, else with the exit code of the
    first failure. Never prints a token."""
    from ..doctor import run_doctor

    result = run_doctor(cli_obj(ctx).overrides)
    emit(result, as_json, render_doctor_text(result))
    sys.exit(result["exit_code"])


@click.group(context_settings=CONTEXT)
def config() -> None:
    """Write or show the configuration."""


@command(
    config,
    "init",
    examples="""
agentcom config init --hub-url http://localhost:4000 --agent-id alice --register
agentcom config init --hub-url http://hub:4000 --agent-id gcu --token-file ~/.gcu-token --capabilities code,review
""",
)
@click.option("--register", is_flag=True, help="Register the agent id at the hub and store the token it gives.")
@click.option("--capabilities", metavar="LIST", help="Comma-separated capabilities.")
@click.option("--ignore-from", metavar="LIST", help="Comma-separated sender globs to ignore.")
@click.option("--status", "status_text", metavar="TEXT", help="Status text sent in auto-replies.")
@click.option("--force", is_flag=True, help="Replace an existing config file (its settings not given anew are kept).")
@click.pass_context
def config_init(
    ctx: click.Context,
    register: bool,
    capabilities: str | None,
    ignore_from: str | None,
    status_text: str | None,
    force: bool,
) -> None:
    """Write a config file (mode 0600) from the options and environment."""
    written = config_actions.init_config(
        cli_obj(ctx).overrides,
        register=register,
        capabilities=capabilities,
        ignore_from=ignore_from,
        status=status_text,
        force=force,
    )
    click.echo(f"wrote {written['path']}")
    if written["kept"]:
        click.echo(f"kept from the file it replaced: {', '.join(written['kept'])}")
    if written["dropped"]:
        click.echo(f"dropped from the file it replaced: {', '.join(written['dropped'])}")


@command(
    config,
    "token",
    examples="""
agentcom config token --token-file ~/new-token
printf %s "$NEW_TOKEN" | agentcom config token -
""",
)
@click.argument("source", required=False, metavar="[-]")
@click.pass_context
def config_token(ctx: click.Context, source: str | None) -> None:
    """Replace only the token (after a reset), keeping every other setting.

    The new token comes from --token-file F, or from stdin with `-`; it goes where the config
    file keeps its token (its token line, or the file its token_file names), mode 0600. The
    token is never printed."""
    from ..config import ENV_VARS, default_config_path
    from ..config_write import replace_token

    overrides = cli_obj(ctx).overrides
    token_file = overrides.get("token_file")
    if (source is None) == (token_file is None) or source not in (None, "-"):
        raise UsageError("give the new token with --token-file FILE or on stdin with `-` (one of them)")
    if source == "-":
        token = sys.stdin.read()
    else:
        try:
            token = Path(str(token_file)).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise UsageError(f"cannot read the new token from {token_file}: {reason}") from None
    path = Path(overrides.get("config") or os.environ.get(ENV_VARS["config"]) or default_config_path())
    what, where = replace_token(path, token)
    click.echo(
        f"wrote the new token to config file {where}"
        if what == "config file"
        else f"wrote the new token to token file {where} (named by config file {path})"
    )
    for name in ("token", "token_file"):
        if os.environ.get(ENV_VARS[name]):
            click.echo(f"note: {ENV_VARS[name]} is set in the environment and overrides the config's token", err=True)


@command(
    config,
    "show",
    examples="""
agentcom config show
""",
)
@json_option
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """The effective settings, token masked, and where each came from."""
    settings = cli_obj(ctx).settings()
    data = settings.public()
    data["sources"] = dict(settings.sources)
    shown = dict(data)
    if not settings.wake.configured:
        shown["wake"] = "not configured (a watch handles what code can and keeps the rest for `check`)"
    emit(data, as_json, render_mapping(shown))


@click.command(context_settings=CONTEXT)
def demo() -> None:
    """A tour on an embedded hub: traffic, Tier 0, a reply, an ack."""
    from ..demo import run_demo

    run_demo(click.echo)


@click.command("help", context_settings=CONTEXT)
@click.argument("command_path", nargs=-1, metavar="[COMMAND]...")
@click.pass_context
def help_command(ctx: click.Context, command_path: tuple[str, ...]) -> None:
    """Show help for agentcom or one of its commands."""
    cmd: click.Command = main
    current = ctx.find_root()
    for name in command_path:
        sub = cmd.get_command(current, name) if isinstance(cmd, click.Group) else None
        if sub is None:
            raise UsageError(f"no command {name!r}: `agentcom help` lists them")
        current = click.Context(sub, info_name=name, parent=current)
        cmd = sub
    click.echo(current.get_help())


@click.command(
    context_settings=CONTEXT,
    epilog=(
        "\b\nExamples (in your shell's start-up file):\n"
        '  eval "$(agentcom completion bash)"    # ~/.bashrc\n'
        '  eval "$(agentcom completion zsh)"     # ~/.zshrc\n'
        "  agentcom completion fish | source     # ~/.config/fish/config.fish"
    ),
)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish."""
    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(main, {}, "agentcom", "_AGENTCOM_COMPLETE").source())
