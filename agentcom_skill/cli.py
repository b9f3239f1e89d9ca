"""The `agentcom` command line: parse, call one action, print. Nothing else lives here."""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Callable

import click

from . import __version__
from .errors import EXIT_CODES, AgentComError, UsageError

EXIT_CODE_HELP = "\b\nExit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class CliContext:
    def __init__(self) -> None:
        self.overrides: dict[str, Any] = {}
        self.verbose = False
        self.json_errors = False
        self.emitted = False  # a result is on stdout: an error after it goes to stderr only

    def settings(self):
        from .config import load_settings

        return load_settings(self.overrides)


def _cli_obj(ctx: click.Context) -> CliContext:
    obj = ctx.find_object(CliContext)
    if obj is None:
        root = ctx.find_root()
        root.obj = obj = CliContext()
    return obj


class AgentComGroup(click.Group):
    """Maps every AgentComError to one line on stderr and its exit code, never a traceback."""

    def main(self, args: Any = None, prog_name: str | None = None, **kwargs: Any) -> Any:
        argv = list(args) if args is not None else sys.argv[1:]
        kwargs.pop("standalone_mode", None)
        try:
            return super().main(argv, prog_name or "agentcom", standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(0)
        except click.ClickException as exc:  # usage errors: click's text, plus JSON under --json
            if _wants_json(argv):
                click.echo(json.dumps({"error": {"kind": "usage", "message": exc.format_message(), "exit_code": exc.exit_code}}))
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("agentcom: interrupted", err=True)
            sys.exit(130)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            rv = super().invoke(ctx)
        except AgentComError as exc:
            obj = _cli_obj(ctx)
            if obj.json_errors and not obj.emitted:
                click.echo(json.dumps({"error": {"kind": exc.kind, "message": _one_line(str(exc)), "exit_code": exc.exit_code}}))
            click.echo(f"agentcom: {_one_line(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("agentcom: interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # a bug: say so in one line; -v shows the traceback
            if _cli_obj(ctx).verbose:
                raise
            click.echo(f"agentcom: internal error: {type(exc).__name__}: {_one_line(str(exc))} (run with -v for details)", err=True)
            sys.exit(1)
        return rv


def _wants_json(argv: list[str]) -> bool:
    return "--json" in argv or "--format=json" in argv or any(
        a == "--format" and b == "json" for a, b in zip(argv, argv[1:]))


def _one_line(text: str) -> str:
    from .render import neutralise

    return neutralise(" ".join(text.split()))[:2000]


def _emit(data: dict[str, Any], as_json: bool, text: str | None = None) -> None:
    if as_json:
        from .render import json_text

        click.echo(json_text(data))
    elif text is not None:
        from .render import neutralise

        click.echo(neutralise(text, keep_newlines=True))
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        _cli_obj(ctx).emitted = True
    for warning in data.get("warnings") or []:
        if not as_json:
            click.echo(f"agentcom: warning: {_one_line(warning)}", err=True)


# options every command takes, before or after its name ----------------------------


def _store_override(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and value is not False:
            obj = _cli_obj(ctx)
            if name == "verbose":
                _verbose(obj)
            else:
                obj.overrides[name] = value
        return value

    return callback


def _verbose(obj: CliContext) -> None:
    if obj.verbose:
        return
    import logging

    obj.verbose = True
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("agentcom: %(message)s"))
    logger = logging.getLogger("agentcom")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


GLOBAL_OPTIONS = [
    ("--hub-url", "hub_url", "URL", "Hub base URL, like http://localhost:4000 [env AGENTCOM_HUB_URL]."),
    ("--agent-id", "agent_id", "ID", "This agent's id [env AGENTCOM_AGENT_ID]."),
    ("--token-file", "token_file", "PATH", "File holding the token [env AGENTCOM_TOKEN_FILE; or AGENTCOM_TOKEN]."),
    ("--config", "config", "PATH", "Config file [env AGENTCOM_CONFIG]."),
    ("--state-dir", "state_dir", "PATH", "State folder [env AGENTCOM_STATE_DIR]."),
]


def global_options(f: Callable) -> Callable:
    for flag, name, metavar, help_text in reversed(GLOBAL_OPTIONS):
        f = click.option(flag, name, metavar=metavar, help=help_text, expose_value=False, callback=_store_override(name))(f)
    return click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_store_override("verbose"),
                        help="Log each HTTP call to stderr (never the token); tracebacks for internal errors.")(f)


def _json_option(f: Callable) -> Callable:
    def mark(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        if value:
            _cli_obj(ctx).json_errors = True
        return value

    return click.option("--json", "as_json", is_flag=True, callback=mark, help="Print JSON (the Python API's result).")(f)


def command(group: click.Group, name: str | None = None, examples: str = "", **kwargs: Any) -> Callable:
    """A subcommand with the global options and an Examples section in its help."""
    def decorate(f: Callable) -> click.Command:
        epilog = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in examples.strip().splitlines()) if examples else None
        return group.command(name, epilog=epilog, context_settings=CONTEXT, **kwargs)(global_options(f))

    return decorate


FORMAT_RULE = "text when stdout is a terminal, else prompt"
_FORMAT_HELP = (f"text for a person, json for a program, prompt (fenced as untrusted) for an LLM "
                f"[default: {FORMAT_RULE}].")


def _format_options(f: Callable) -> Callable:
    """--format text|json|prompt and --json (the same as --format json), for every command that
    prints what other agents wrote."""
    def mark(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value == "json":
            _cli_obj(ctx).json_errors = True
        return value

    f = click.option("--format", "fmt", type=click.Choice(["text", "json", "prompt"]), default=None, callback=mark,
                     help=_FORMAT_HELP)(f)
    return _json_option(f)


def output_format(fmt: str | None, as_json: bool) -> str:
    """One rule for every reading command: what was asked for, else text for a person at a
    terminal and the fenced prompt rendering for anything else (an agent's tool call, a pipe)."""
    if as_json:
        if fmt not in (None, "json"):
            raise UsageError(f"--json is --format json: give one of --json and --format {fmt}")
        return "json"
    if fmt:
        return fmt
    return "text" if sys.stdout.isatty() else "prompt"


def _emit_formatted(result: dict[str, Any], fmt: str, text: Callable[[], str], prompt: Callable[[], str]) -> None:
    """Print a result for its audience (the renderers are called only for the format printed)."""
    if fmt == "json":
        _emit(result, True)
    else:
        _emit(result, False, prompt() if fmt == "prompt" else text())


def _read_text(text: str | None, text_file: str | None, allow_stdin: bool) -> str | None:
    if text_file is not None:
        if text is not None:
            raise UsageError("give the text as an argument or with --text-file, not both")
        try:
            with open(text_file, encoding="utf-8", newline="") as fh:
                return _without_final_newline(fh.read())
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --text-file {text_file}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}") from None
    if text == "-" or (text is None and allow_stdin and not sys.stdin.isatty()):
        try:
            return _without_final_newline(sys.stdin.read())
        except UnicodeDecodeError:
            raise UsageError("the text on stdin is not UTF-8") from None
    return text


def _without_final_newline(text: str) -> str:
    """The line break that ends a file or `echo`'s output is not part of the message."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, what: str) -> float:
    match = _DURATION.match(text.lower())
    if not match:
        raise UsageError(f"{what} {text!r} is not a duration: use a number with s, m, h, d or w, like 30m or 2h")
    return float(match.group(1)) * _UNITS[match.group(2)]


# the commands --------------------------------------------------------------------


@click.group(cls=AgentComGroup, epilog=EXIT_CODE_HELP, context_settings=CONTEXT, invoke_without_command=False)
@global_options
@click.version_option(__version__, prog_name="agentcom")  # the one source of the version
@click.pass_context
def main(ctx: click.Context) -> None:
    """agentcom: read an AgentCom mailbox, let code handle what it can, hand the rest to the agent.

    Global options (--hub-url, --agent-id, --token-file, --config, --state-dir, -v) go
    before or after the command. `agentcom help COMMAND` shows a command's help.

    A message (REF) is named by its seq (12 or #12), its id, or a unique prefix of its id of
    at least 4 hex digits; 4-15 digits are a seq when a message kept here has that seq, else
    an id prefix. Commands that print other agents' words take --format text|json|prompt:
    text when stdout is a terminal, else prompt (fenced for an LLM).
    """
    _cli_obj(ctx)


@command(main, examples="""
agentcom check                  # for a person
agentcom check --json           # for a program
agentcom check --format prompt  # for an LLM, fenced as untrusted content
agentcom check --cron           # NO_REPLY when nothing needs attention
""")
@_format_options
@click.option("--max", "max_", type=click.IntRange(min=1), metavar="N", help="Return at most N messages; the rest stay pending.")
@click.option("--peek", is_flag=True, help="Show what would be returned; change and send nothing.")
@click.option("--cron", is_flag=True, help="For cron and heartbeat jobs: NO_REPLY when nothing needs attention, else the prompt rendering.")
@click.option("--exit-code", is_flag=True, help="Exit 1 when messages need attention.")
@click.pass_context
def check(ctx: click.Context, as_json: bool, fmt: str | None, max_: int | None, peek: bool, cron: bool, exit_code: bool) -> None:
    """Poll the mailbox; print only the messages that need the agent."""
    from . import skill

    obj = _cli_obj(ctx)
    settings = obj.settings()
    fmt = output_format(fmt or ("prompt" if cron and not as_json else None), as_json)
    emit = _check_emitter(obj, fmt, settings.prompt_text_limit, cron=cron, peek=peek)
    result = skill.check(max=max_, peek=peek, emit=emit, settings=settings)
    if exit_code and result["messages"]:
        sys.exit(1)


def _check_emitter(obj: CliContext, fmt: str, text_limit: int, cron: bool = False, peek: bool = False) -> Callable[[dict[str, Any]], None]:
    """Print a check result (check, wait) for its audience, before the delivery is confirmed."""

    def emit(result: dict[str, Any]) -> None:
        if peek:
            result = {**result, "peek": True}
        if fmt == "json":
            _emit(result, True)
        elif cron and not result["messages"]:
            click.echo("NO_REPLY")
            for warning in result["warnings"]:  # hazards still reach the cron log
                click.echo(f"agentcom: warning: {_one_line(warning)}", err=True)
        elif fmt == "prompt":
            from .render import render_prompt

            click.echo(render_prompt(result, text_limit))
        else:
            from .render import render_check_text

            click.echo(render_check_text(result, peek=peek))
        sys.stdout.flush()  # out before the delivery is confirmed in the store
        obj.emitted = True

    return emit


_SEND_EXAMPLES = """
agentcom send loash "Could you review PR 12?"
agentcom send broadcast "Who knows Elixir?" --needs elixir
echo "long report" | agentcom send loash -
agentcom send loash --text-file report.md --priority high
agentcom send loash --type request --payload '{"action": "query", "respond_with": "structured"}'
"""


@command(main, examples=_SEND_EXAMPLES)
@click.argument("to")
@click.argument("text", required=False)
@click.option("--text-file", metavar="PATH", help="Read the text from a file.")
@click.option("--type", "type_", metavar="TYPE", help="Message type (default chat; request, response, status, ...).")
@click.option("--reply-to", metavar="ID", help="Id of the message this answers (or use `agentcom reply`).")
@click.option("--priority", type=click.Choice(["low", "normal", "high", "urgent"]), help="payload.priority.")
@click.option("--needs", "needs", multiple=True, metavar="CAP", help="A capability the receiver needs (repeat); for broadcasts.")
@click.option("--respond-with", type=click.Choice(["structured", "natural", "none"]), help="payload.respond_with; none: fire and forget.")
@click.option("--payload", metavar="JSON", help="A JSON object merged into the payload.")
@_json_option
@click.pass_context
def send(ctx: click.Context, to: str, text: str | None, text_file: str | None, type_: str | None, reply_to: str | None,
         priority: str | None, needs: tuple[str, ...], respond_with: str | None, payload: str | None, as_json: bool) -> None:
    """Send TEXT to agent TO, or to everyone (TO=broadcast)."""
    from . import skill

    parsed = None
    if payload is not None:
        try:
            parsed = json.loads(payload)
        except ValueError as exc:
            raise UsageError(f"--payload is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise UsageError("--payload must be a JSON object, like '{\"priority\": \"high\"}'")
    body = _read_text(text, text_file, allow_stdin=parsed is None)
    result = skill.send(to, body, type_, reply_to, parsed, priority=priority, needs=needs, respond_with=respond_with, settings=_cli_obj(ctx).settings())
    from .render import sent_line

    _emit(result, as_json, sent_line(result))


@command(main, examples="""
agentcom reply 12 "On it."
agentcom reply 3f9a0c1d2e3b4a59 "Done, see PR 14."
agentcom reply 12 - < answer.txt
""")
@click.argument("ref", metavar="REF")
@click.argument("text", required=False)
@click.option("--text-file", metavar="PATH", help="Read the text from a file.")
@_json_option
@click.pass_context
def reply(ctx: click.Context, ref: str, text: str | None, text_file: str | None, as_json: bool) -> None:
    """Answer a message: TEXT goes to its sender as a response to it."""
    from . import skill

    from .render import sent_line

    body = _read_text(text, text_file, allow_stdin=True)
    result = skill.reply(ref, body or "", settings=_cli_obj(ctx).settings())
    _emit(result, as_json, sent_line(result))


@command(main, examples="""
agentcom ack 12            # done with #12 (only that one)
agentcom ack 12 14 15
agentcom ack --id 3f9a0c1d2e3b4a59
agentcom ack --through 15  # every shown message up to #15
agentcom ack               # every message shown so far
""")
@click.argument("refs", nargs=-1, metavar="[REF]...")
@click.option("--id", "ids", multiple=True, metavar="ID", help="A message id or unique id prefix, never a seq (repeat).")
@click.option("--through", type=int, metavar="SEQ", help="Every shown message with seq up to SEQ.")
@_json_option
@click.pass_context
def ack(ctx: click.Context, refs: tuple[str, ...], ids: tuple[str, ...], through: int | None, as_json: bool) -> None:
    """Finish the messages named (none named: all shown)."""
    from . import skill

    from .render import ack_text

    result = skill.ack(list(refs), ids=ids, through=through, settings=_cli_obj(ctx).settings())
    _emit(result, as_json, ack_text(result))


@command(main, examples="""
agentcom defer 12 --for 30m
agentcom defer 12 14 --for 2h
""")
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@click.option("--for", "for_", default="30m", show_default=True, metavar="DURATION", help="How long: 90s, 30m, 2h, 1d.")
@_json_option
@click.pass_context
def defer(ctx: click.Context, refs: tuple[str, ...], for_: str, as_json: bool) -> None:
    """Put shown messages aside; they come back after --for."""
    from . import skill
    from .render import deferred_text

    result = skill.defer(list(refs), parse_duration(for_, "--for"), settings=_cli_obj(ctx).settings())
    _emit(result, as_json, deferred_text(result))


@command(main, examples="""
agentcom dismiss 12
""")
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@_json_option
@click.pass_context
def dismiss(ctx: click.Context, refs: tuple[str, ...], as_json: bool) -> None:
    """Finish messages without acting on them (kept in the history)."""
    from . import skill
    from .render import dismissed_text

    result = skill.dismiss(list(refs), settings=_cli_obj(ctx).settings())
    _emit(result, as_json, dismissed_text(result))


@command(main, examples="""
agentcom show 12
agentcom show 3f9a0c1d2e3b4a59 --json
""")
@click.argument("ref", metavar="REF")
@_format_options
@click.pass_context
def show(ctx: click.Context, ref: str, as_json: bool, fmt: str | None) -> None:
    """Show one stored message in full (also after an ack)."""
    from . import skill
    from .render import render_show_prompt, render_show_text

    fmt = output_format(fmt, as_json)
    msg = skill.show(ref, settings=_cli_obj(ctx).settings())
    _emit_formatted(msg, fmt, lambda: render_show_text(msg), lambda: render_show_prompt(msg))


def _emit_history(result: dict[str, Any], fmt: str, empty: str) -> None:
    from .render import render_history_prompt, render_history_text

    _emit_formatted(result, fmt, lambda: render_history_text(result["messages"], empty),
                    lambda: render_history_prompt(result["messages"]))


@command(main, examples="""
agentcom inbox
agentcom inbox --from loash --since 2h
agentcom inbox --state shown     # returned and not yet acked
agentcom inbox --state dead      # dead letters
""")
@click.option("--from", "sender", metavar="AGENT", help="Only from this sender.")
@click.option("--type", "type_", metavar="TYPE", help="Only this message type.")
@click.option("--state", type=click.Choice(["pending", "leased", "shown", "deferred", "done", "dismissed", "dead"]), help="Only in this state.")
@click.option("--since", metavar="DURATION", help="Only received in the last DURATION (30m, 2h, 1d).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@_format_options
@click.pass_context
def inbox(ctx: click.Context, sender: str | None, type_: str | None, state: str | None, since: str | None, limit: int, as_json: bool, fmt: str | None) -> None:
    """Recent messages of every kind and state, newest first."""
    from . import skill

    seconds = parse_duration(since, "--since") if since else None
    result = skill.inbox(sender, type_, state, seconds, limit, settings=_cli_obj(ctx).settings())
    _emit_history(result, output_format(fmt, as_json), "No messages kept here yet.")


@command(main, examples="""
agentcom thread 12
""")
@click.argument("ref", metavar="REF")
@_format_options
@click.pass_context
def thread(ctx: click.Context, ref: str, as_json: bool, fmt: str | None) -> None:
    """A message with its replies and what it answers, in time order."""
    from . import skill

    result = skill.thread(ref, settings=_cli_obj(ctx).settings())
    _emit_history(result, output_format(fmt, as_json), "Nothing in this thread.")


@command(main, examples="""
agentcom search "rate limiter"
agentcom search loash --limit 5
""")
@click.argument("text")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@_format_options
@click.pass_context
def search(ctx: click.Context, text: str, limit: int, as_json: bool, fmt: str | None) -> None:
    """Find stored messages by words in their text or sender."""
    from . import skill

    result = skill.search(text, limit, settings=_cli_obj(ctx).settings())
    _emit_history(result, output_format(fmt, as_json), "No stored message matches.")


@command(main, examples="""
agentcom sent --limit 5
""")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@_format_options
@click.pass_context
def sent(ctx: click.Context, limit: int, as_json: bool, fmt: str | None) -> None:
    """Messages this agent sent, auto-replies included, newest first."""
    from . import skill

    fmt = output_format(fmt, as_json)
    result = skill.sent(limit, settings=_cli_obj(ctx).settings())
    _emit_history(result, fmt, "Nothing sent yet.")


@main.group(invoke_without_command=True, context_settings=CONTEXT, epilog="\b\nExamples:\n  agentcom status\n  agentcom status --json\n  agentcom status set \"reviewing PR 12\"")
@global_options
@_json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Hub health, pending and leased messages, the watch, hazards."""
    if ctx.invoked_subcommand is not None:
        return
    from . import skill
    from .render import render_status_text

    result = skill.status(settings=_cli_obj(ctx).settings())
    _emit(result, as_json, render_status_text(result))
    if result["hub"]["error"]:  # everything local was printed; the hub's trouble is the exit code
        sys.exit(result["hub"]["error"]["exit_code"])


@command(status, "set", examples="""
agentcom status set "reviewing PR 12"
""")
@click.argument("text")
@_json_option
@click.pass_context
def status_set(ctx: click.Context, text: str, as_json: bool) -> None:
    """Set my status (auto-replies, and the hub's presence)."""
    from . import skill
    from .render import status_set_text

    result = skill.set_status(text, settings=_cli_obj(ctx).settings())
    _emit(result, as_json, status_set_text(result))


@command(main, examples="""
agentcom watch                # one line per event on stderr
agentcom watch --jsonl        # and a JSON object per event on stdout
""")
@click.option("--jsonl", is_flag=True, help="Also print each event as one JSON object on stdout.")
@click.pass_context
def watch(ctx: click.Context, jsonl: bool) -> None:
    """Hold the hub's WebSocket; handle and wake in real time."""
    from .watch import run_watch

    sys.exit(run_watch(_cli_obj(ctx).settings(), jsonl))


@command(main, examples="""
agentcom mcp                        # for an MCP client: command "agentcom", args ["mcp"]
agentcom mcp --tools check,reply,ack
""")
@click.option("--tools", metavar="LIST", help="Comma-separated tools to expose [default: all].")
@click.pass_context
def mcp(ctx: click.Context, tools: str | None) -> None:
    """Serve this mailbox to an MCP client over stdio."""
    from .mcpserver import run_mcp

    names = [t.strip() for t in tools.split(",") if t.strip()] if tools else None
    sys.exit(run_mcp(_cli_obj(ctx).settings(), names))


@command(main, examples="""
agentcom wait --timeout 600 && echo "something needs me"
agentcom wait --format prompt
""")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS", help="Give up after this long (exit 1).")
@click.option("--max", "max_", type=click.IntRange(min=1), metavar="N", help="Return at most N messages.")
@_format_options
@click.pass_context
def wait(ctx: click.Context, timeout: float | None, max_: int | None, as_json: bool, fmt: str | None) -> None:
    """Block until something needs attention; print it like check."""
    from . import skill

    obj = _cli_obj(ctx)
    settings = obj.settings()
    emit = _check_emitter(obj, output_format(fmt, as_json), settings.prompt_text_limit)
    if skill.wait(timeout, max_, emit=emit, settings=settings) is None:
        sys.exit(1)


@command(main, examples="""
agentcom ping bob                  # pong from bob in 35 ms
agentcom ping bob --timeout 600    # a peer without a watch answers at its next check
""")
@click.argument("agent")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True, max=86400), default=10.0, show_default=True,
              metavar="SECONDS", help="How long to wait for the pong (exit 1 without one).")
@_json_option
@click.pass_context
def ping(ctx: click.Context, agent: str, timeout: float, as_json: bool) -> None:
    """Ping AGENT and print the round trip of its pong.

    Waiting takes nothing from your own mailbox: messages that arrive meanwhile are stored
    for `check`, never shown here. Exit 1 when no pong came within --timeout.
    """
    from . import skill
    from .render import ping_text

    result = skill.ping(agent, timeout, settings=_cli_obj(ctx).settings())
    if result["pong_id"] is None:
        if as_json:
            _emit(result, True)
        else:
            _emit({"warnings": result["warnings"]}, False)
            click.echo(f"agentcom: {ping_text(result)}", err=True)
        sys.exit(1)
    _emit(result, as_json, ping_text(result))


@command(main, examples="""
agentcom doctor          # one line a check, with what to do
agentcom doctor --json
""")
@_json_option
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check the setup step by step and say what to fix.

    In order: the config file, the hub (through the proxy if one is set) and its health, the
    token, the state folder and store, a live watch, the wake endpoint and its token, the
    OpenClaw skill. Exits 0 when everything needed works, else with the exit code of the
    first failure. Never prints a token."""
    from .doctor import run_doctor
    from .render import render_doctor_text

    result = run_doctor(_cli_obj(ctx).overrides)
    _emit(result, as_json, render_doctor_text(result))
    sys.exit(result["exit_code"])


@command(main, examples="""
agentcom agents
agentcom agents --format prompt   # for an LLM: their names and statuses fenced
""")
@_format_options
@click.pass_context
def agents(ctx: click.Context, as_json: bool, fmt: str | None) -> None:
    """Who is online (connected to the hub by WebSocket)."""
    from . import skill
    from .render import render_agents_prompt, render_agents_text

    fmt = output_format(fmt, as_json)
    result = skill.agents(settings=_cli_obj(ctx).settings())
    _emit_formatted(result, fmt, lambda: render_agents_text(result["agents"]),
                    lambda: render_agents_prompt(result["agents"]))


@command(main, examples="""
agentcom log
agentcom log --disposition drop --limit 10
""")
@click.option("--disposition", type=click.Choice(["auto_reply", "store", "drop"]), help="Only this disposition.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Newest N entries.")
@_format_options
@click.pass_context
def log(ctx: click.Context, disposition: str | None, limit: int, as_json: bool, fmt: str | None) -> None:
    """What Tier 0 handled and why; peers' statuses; dead letters."""
    from . import skill
    from .render import render_log_prompt, render_log_text

    fmt = output_format(fmt, as_json)
    obj = _cli_obj(ctx)
    settings = obj.settings()
    result = skill.log(disposition, limit, settings=settings)
    _emit_formatted(result, fmt, lambda: render_log_text(result),
                    lambda: render_log_prompt(result, min(300, settings.prompt_text_limit)))


@main.group(context_settings=CONTEXT)
def config() -> None:
    """Write or show the configuration."""


@command(config, "init", examples="""
agentcom config init --hub-url http://localhost:4000 --agent-id alice --register
agentcom config init --hub-url http://hub:4000 --agent-id gcu --token-file ~/.gcu-token --capabilities code,review
""")
@click.option("--register", is_flag=True, help="Register the agent id at the hub and store the token it gives.")
@click.option("--capabilities", metavar="LIST", help="Comma-separated capabilities.")
@click.option("--ignore-from", metavar="LIST", help="Comma-separated sender globs to ignore.")
@click.option("--status", "status_text", metavar="TEXT", help="Status text sent in auto-replies.")
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@click.pass_context
def config_init(ctx: click.Context, register: bool, capabilities: str | None, ignore_from: str | None, status_text: str | None, force: bool) -> None:
    """Write a config file (mode 0600) from the options and environment."""
    from .skill import init_config

    path = init_config(_cli_obj(ctx).overrides, register=register, capabilities=capabilities, ignore_from=ignore_from, status=status_text, force=force)
    click.echo(f"wrote {path}")


@command(config, "show", examples="""
agentcom config show
""")
@_json_option
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """The effective settings, token masked, and where each came from."""
    from .render import render_mapping

    settings = _cli_obj(ctx).settings()
    data = settings.public()
    data["sources"] = dict(settings.sources)
    _emit(data, as_json, render_mapping(data))


@main.group(context_settings=CONTEXT)
def hub() -> None:
    """Run a local AgentCom-compatible hub."""


@hub.command("serve", context_settings=CONTEXT, epilog="""\b
Examples:
  agentcom hub serve --port 4000 &
  agentcom hub token alice
  agentcom hub serve --no-rate-limit            # tests and load runs
  agentcom hub serve --host 0.0.0.0 --admin-token-file ~/.hub-admin""")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on: 127.0.0.1 is this machine only, 0.0.0.0 every interface.")
@click.option("--port", type=click.IntRange(0, 65535), default=4000, show_default=True, help="0 picks a free port.")
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file [default: user data dir].")
@click.option("--mailbox-cap", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--ttl-days", type=click.FloatRange(min=0, min_open=True), default=7.0, show_default=True)
@click.option("--rate-limit", "rate_limit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Messages per second per sender once the burst is spent [default: 1, as the real hub].")
@click.option("--rate-burst", "rate_burst", type=click.IntRange(min=1), default=None,
              help="Messages a sender may send at once [default: 60, as the real hub].")
@click.option("--no-rate-limit", is_flag=True, help="No rate limits at all (sending, registering, listing agents).")
@click.option("--admin-token-file", type=click.Path(dir_okay=False), default=None,
              help="Only the token in this private file may mint tokens (POST /admin/tokens); "
                   "stricter than the real hub.")
@click.option("--ws-idle-timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Close a WebSocket after this many seconds without a frame either way.")
@click.option("--ws-no-pong", is_flag=True, hidden=True,
              help="Never answer WebSocket pings (tests: a half-dead connection).")
def hub_serve(host: str, port: int, db: str | None, mailbox_cap: int, ttl_days: float, rate_limit: float | None,
              rate_burst: int | None, no_rate_limit: bool, admin_token_file: str | None, ws_idle_timeout: float,
              ws_no_pong: bool) -> None:
    """Serve the hub's HTTP and WebSocket contract until Ctrl-C or SIGTERM.

    Rate limits are the real hub's unless --no-rate-limit: 60 messages at once per sender, then
    one a second; 10 registrations a minute per address; 120 agent listings, then two a second."""
    import shlex

    from .hub.server import HubOptions, serve
    from .hub.store import default_db_path

    if no_rate_limit and (rate_limit is not None or rate_burst is not None):
        raise UsageError("--no-rate-limit cannot be combined with --rate-limit or --rate-burst")
    options = HubOptions(
        rate_limits=not no_rate_limit,
        message_rate=1.0 if rate_limit is None else rate_limit,
        message_burst=60 if rate_burst is None else rate_burst,
        ws_idle_timeout=ws_idle_timeout,
        ws_answer_pings=not ws_no_pong,
        admin_token=None if admin_token_file is None else _read_admin_token(admin_token_file),
    )
    db_path = db or str(default_db_path())
    mint = "agentcom hub token AGENT_ID" + ("" if db is None else f" --db {shlex.quote(db_path)}")
    limits = "off" if no_rate_limit else f"burst {options.message_burst:g}, then {options.message_rate:g}/s per sender"
    admin = "; minting only with the admin token" if options.admin_token else ""

    def started(url: str) -> None:
        click.echo(f"agentcom hub: serving {url} (database {db_path}; rate limits {limits}{admin}); "
                   f"mint a token with: {mint}", err=True)

    try:
        serve(host, port, _hub_store(db, mailbox_cap, ttl_days), options, on_start=started)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _read_admin_token(path_text: str) -> str:
    """The admin token from its file: private (no access for group or others), one line."""
    import os
    import stat
    from pathlib import Path

    path = Path(path_text).expanduser()
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise UsageError(f"cannot read --admin-token-file {path}: {reason}") from None
    if os.name == "posix" and stat.S_IMODE(mode) & 0o077:
        raise UsageError(f"--admin-token-file {path} is readable by others: chmod 600 it first")
    token = text.strip()
    if len(token) < 16 or any(c.isspace() or not c.isprintable() for c in token):
        raise UsageError(f"--admin-token-file {path} must hold one token of at least 16 characters, no spaces")
    return token


@hub.command("token", context_settings=CONTEXT,
             epilog="\b\nExamples:\n  TOKEN=$(agentcom hub token alice)\n  agentcom hub token alice --db /tmp/x/hub.db")
@click.argument("agent_id")
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file [default: the same as `hub serve`].")
def hub_token(agent_id: str, db: str | None) -> None:
    """Mint a token for AGENT_ID in the hub's database; print only the token."""
    from .config import check_agent_id
    from .hub.store import default_db_path

    check_agent_id(agent_id, "the command line")
    if db is None and not default_db_path().exists():
        raise UsageError(f"no hub database at {default_db_path()}: start `agentcom hub serve` first, "
                         "or pass --db with the file your hub serves")
    store = _hub_store(db)
    try:
        click.echo(store.mint_token(agent_id))
    finally:
        store.close()


def _hub_store(db: str | None, mailbox_cap: int = 100, ttl_days: float = 7.0) -> Any:
    import sqlite3

    from .hub.store import HubStore, default_db_path

    try:
        return HubStore(db or default_db_path(), mailbox_cap, ttl_days)
    except (sqlite3.Error, OSError) as exc:
        raise UsageError(f"cannot open the hub database {db or default_db_path()}: {exc}") from None


@main.command(context_settings=CONTEXT)
def demo() -> None:
    """A tour on an embedded hub: traffic, Tier 0, a reply, an ack."""
    from .demo import run_demo

    run_demo(click.echo)


@main.command("help", context_settings=CONTEXT)
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


@main.command(context_settings=CONTEXT, epilog=(
    "\b\nExamples (in your shell's start-up file):\n"
    "  eval \"$(agentcom completion bash)\"    # ~/.bashrc\n"
    "  eval \"$(agentcom completion zsh)\"     # ~/.zshrc\n"
    "  agentcom completion fish | source     # ~/.config/fish/config.fish"))
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(main, {}, "agentcom", "_AGENTCOM_COMPLETE").source())


if __name__ == "__main__":  # pragma: no cover
    main()
