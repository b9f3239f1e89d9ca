"""What every command shares: the error mapping (one line and an exit code, never a
traceback), the global options, --json and --format, reading a message's text, durations,
and printing a result for its audience (render.py makes the text)."""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections.abc import Callable
from typing import Any

import click

from ..config import load_settings
from ..errors import EXIT_CODES, AgentComError, UsageError
from ..untrusted import json_text, neutralise

EXIT_CODE_HELP = "\b\nExit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class CliContext:
    def __init__(self) -> None:
        self.overrides: dict[str, Any] = {}
        self.verbose = False
        self.json_errors = False
        self.emitted = False  # a result is on stdout: an error after it goes to stderr only

    def settings(self):
        return load_settings(self.overrides)


def cli_obj(ctx: click.Context) -> CliContext:
    obj = ctx.find_object(CliContext)
    if obj is None:
        root = ctx.find_root()
        root.obj = obj = CliContext()
    return obj


class AgentComGroup(click.Group):
    """The top-level group: maps every AgentComError to one line on stderr and its exit code,
    never a traceback; and loads a command's module only when that command runs (a `check`
    does not pay for building forty commands it does not use)."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}  # name -> "module:attribute" under agentcom_skill.cli

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attribute = self.lazy[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(f"{__package__}.{module}"), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(self, args: Any = None, prog_name: str | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        argv = list(args) if args is not None else sys.argv[1:]
        kwargs.pop("standalone_mode", None)
        try:
            return super().main(argv, prog_name or "agentcom", standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(0)
        except click.ClickException as exc:  # usage errors: click's text, plus JSON under --json
            if _wants_json(argv):
                click.echo(
                    json.dumps(
                        {"error": {"kind": "usage", "message": exc.format_message(), "exit_code": exc.exit_code}}
                    )
                )
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
            obj = cli_obj(ctx)
            if obj.json_errors and not obj.emitted:
                click.echo(
                    json.dumps({"error": {"kind": exc.kind, "message": one_line(str(exc)), "exit_code": exc.exit_code}})
                )
            click.echo(f"agentcom: {one_line(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("agentcom: interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # a bug: say so in one line; -v shows the traceback
            if cli_obj(ctx).verbose:
                raise
            click.echo(
                f"agentcom: internal error: {type(exc).__name__}: {one_line(str(exc))} (run with -v for details)",
                err=True,
            )
            sys.exit(1)
        return rv


def _wants_json(argv: list[str]) -> bool:
    return (
        "--json" in argv
        or "--format=json" in argv
        or any(a == "--format" and b == "json" for a, b in zip(argv, argv[1:], strict=False))
    )


def one_line(text: str) -> str:
    return neutralise(" ".join(text.split()))[:2000]


def emit(data: dict[str, Any], as_json: bool, text: str | None = None) -> None:
    if as_json:
        click.echo(json_text(data))
    elif text is not None:
        click.echo(neutralise(text, keep_newlines=True))
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        cli_obj(ctx).emitted = True
    for warning in data.get("warnings") or []:
        if not as_json:
            click.echo(f"agentcom: warning: {one_line(warning)}", err=True)


# options every command takes, before or after its name ----------------------------


def _store_override(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and value is not False:
            obj = cli_obj(ctx)
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
        f = click.option(
            flag, name, metavar=metavar, help=help_text, expose_value=False, callback=_store_override(name)
        )(f)
    return click.option(
        "-v",
        "--verbose",
        is_flag=True,
        expose_value=False,
        callback=_store_override("verbose"),
        help="Log each HTTP call to stderr (never the token); tracebacks for internal errors.",
    )(f)


def json_option(f: Callable) -> Callable:
    def mark(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        if value:
            cli_obj(ctx).json_errors = True
        return value

    return click.option("--json", "as_json", is_flag=True, callback=mark, help="Print JSON (the Python API's result).")(
        f
    )


def command(group: click.Group | None = None, name: str | None = None, examples: str = "", **kwargs: Any) -> Callable:
    """A command with the global options and an Examples section in its help: on `group`, or
    standalone (the top-level commands, which `agentcom` loads only when they are run)."""

    def decorate(f: Callable) -> click.Command:
        epilog = (
            "\b\nExamples:\n" + "\n".join(f"  {line}" for line in examples.strip().splitlines()) if examples else None
        )
        make = group.command if group is not None else click.command
        return make(name, epilog=epilog, context_settings=CONTEXT, **kwargs)(global_options(f))

    return decorate


FORMAT_RULE = "text when stdout is a terminal, else prompt"


class FiniteRange(click.FloatRange):
    """click's FloatRange, refusing nan too (nan passes every comparison, then breaks a clock)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if number != number:
            self.fail(f"{value!r} is not a number.", param, ctx)
        return number


_FORMAT_HELP = (
    f"text for a person, json for a program, prompt (fenced as untrusted) for an LLM [default: {FORMAT_RULE}]."
)


def format_options(f: Callable) -> Callable:
    """--format text|json|prompt and --json (the same as --format json), for every command that
    prints what other agents wrote."""

    def mark(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value == "json":
            cli_obj(ctx).json_errors = True
        return value

    f = click.option(
        "--format", "fmt", type=click.Choice(["text", "json", "prompt"]), default=None, callback=mark, help=_FORMAT_HELP
    )(f)
    return json_option(f)


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


def emit_formatted(result: dict[str, Any], fmt: str, text: Callable[[], str], prompt: Callable[[], str]) -> None:
    """Print a result for its audience (the renderers are called only for the format printed)."""
    if fmt == "json":
        emit(result, True)
    else:
        emit(result, False, prompt() if fmt == "prompt" else text())


def read_text(text: str | None, text_file: str | None, allow_stdin: bool) -> str | None:
    if text_file is not None:
        if text is not None:
            raise UsageError("give the text as an argument or with --text-file, not both")
        try:
            with open(text_file, encoding="utf-8", newline="") as fh:
                return _without_final_newline(fh.read())
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"cannot read --text-file {text_file}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}"
            ) from None
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


_DURATION = r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$"
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, what: str) -> float:
    match = re.match(_DURATION, text.lower())
    if not match:
        raise UsageError(f"{what} {text!r} is not a duration: use a number with s, m, h, d or w, like 30m or 2h")
    return float(match.group(1)) * _UNITS[match.group(2)]
