"""The `agentcom` command line: parse, call one action, print. Nothing else lives here."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .errors import EXIT_CODES, AgentComError, UsageError

EXIT_CODE_HELP = "\b\nExit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())


class CliContext:
    def __init__(self, overrides: dict[str, Any], verbose: bool):
        self.overrides = overrides
        self.verbose = verbose
        self.json_errors = False

    def settings(self):
        from .config import load_settings

        return load_settings(self.overrides)


class AgentComGroup(click.Group):
    """Maps every AgentComError to one line on stderr and its exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AgentComError as exc:
            obj = ctx.obj if isinstance(ctx.obj, CliContext) else None
            if obj is not None and obj.json_errors:
                click.echo(json.dumps({"error": {"kind": exc.kind, "message": str(exc), "exit_code": exc.exit_code}}))
            click.echo(f"agentcom: {_one_line(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("agentcom: interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # a bug: say so in one line; -v shows the traceback
            obj = ctx.obj if isinstance(ctx.obj, CliContext) else None
            if obj is not None and obj.verbose:
                raise
            click.echo(f"agentcom: internal error: {type(exc).__name__}: {_one_line(str(exc))} (run with -v for details)", err=True)
            ctx.exit(1)


def _one_line(text: str) -> str:
    from .render import neutralise

    return neutralise(" ".join(text.split()))


def _emit(data: dict[str, Any], as_json: bool, text: str | None = None) -> None:
    if as_json:
        out = json.dumps(data, ensure_ascii=False)
        try:
            out.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates from the hub: escape them, don't crash
            out = json.dumps(data)
        click.echo(out)
    elif text is not None:
        from .render import neutralise

        click.echo(neutralise(text, keep_newlines=True))


def _json_option(f):
    def mark(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.find_object(CliContext).json_errors = True
        return value

    return click.option("--json", "as_json", is_flag=True, callback=mark, expose_value=True, help="Print JSON (the Python API's result).")(f)


@click.group(cls=AgentComGroup, epilog=EXIT_CODE_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--hub-url", metavar="URL", help="Hub base URL [env AGENTCOM_HUB_URL].")
@click.option("--agent-id", metavar="ID", help="This agent's id [env AGENTCOM_AGENT_ID].")
@click.option("--token-file", metavar="PATH", help="File holding the token [env AGENTCOM_TOKEN_FILE; or AGENTCOM_TOKEN].")
@click.option("--config", "config", metavar="PATH", help="Config file [env AGENTCOM_CONFIG].")
@click.option("--state-dir", metavar="PATH", help="State folder [env AGENTCOM_STATE_DIR].")
@click.option("-v", "--verbose", is_flag=True, help="Log each HTTP call to stderr (never the token).")
@click.version_option(package_name="agentcom-skill", prog_name="agentcom")
@click.pass_context
def main(ctx: click.Context, verbose: bool, **overrides: Any) -> None:
    """agentcom: read an AgentCom mailbox, let code handle what it can, hand the rest to the agent."""
    ctx.obj = CliContext({k: v for k, v in overrides.items() if v is not None}, verbose)
    if verbose:
        import logging

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("agentcom: %(message)s"))
        logger = logging.getLogger("agentcom")
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)


@main.command()
@_json_option
@click.option("--format", "fmt", type=click.Choice(["text", "json", "prompt"]), default=None, help="Output for a human, a program or an LLM.")
@click.option("--max", "max_", type=click.IntRange(min=1), metavar="N", help="Return at most N messages; the rest stay pending.")
@click.option("--peek", is_flag=True, help="Show what would be returned; change and send nothing.")
@click.option("--cron", is_flag=True, help="For cron and heartbeat jobs: NO_REPLY when nothing needs attention, else the prompt rendering.")
@click.option("--exit-code", is_flag=True, help="Exit 1 when messages need attention.")
@click.pass_obj
def check(obj: CliContext, as_json: bool, fmt: str | None, max_: int | None, peek: bool, cron: bool, exit_code: bool) -> None:
    """Poll the mailbox; print only the messages that need the agent."""
    from . import skill

    settings = obj.settings()
    fmt = "json" if as_json else fmt or ("prompt" if cron else "text")

    def emit(result: dict[str, Any]) -> None:
        if fmt == "json":
            _emit(result, True)
        elif cron and not result["messages"]:
            click.echo("NO_REPLY")
            for warning in result["warnings"]:  # hazards still reach the cron log
                click.echo(f"agentcom: warning: {_one_line(warning)}", err=True)
        elif fmt == "prompt":
            from .render import render_prompt

            click.echo(render_prompt(result, settings.prompt_text_limit))
        else:
            from .render import render_check_text

            click.echo(render_check_text(result))
        sys.stdout.flush()  # out before the delivery is confirmed in the state

    result = skill.check(max=max_, peek=peek, emit=emit, settings=settings)
    if exit_code and result["messages"]:
        sys.exit(1)


@main.command()
@click.argument("to")
@click.argument("text", required=False)
@click.option("--type", "type_", metavar="TYPE", help="Message type (default chat).")
@click.option("--reply-to", metavar="ID", help="Id of the message this answers.")
@click.option("--payload", metavar="JSON", help="A JSON object merged into the payload.")
@_json_option
@click.pass_obj
def send(obj: CliContext, to: str, text: str | None, type_: str | None, reply_to: str | None, payload: str | None, as_json: bool) -> None:
    """Send TEXT to agent TO, or to everyone with TO=broadcast. Prints the new message id."""
    from . import skill

    parsed = None
    if payload is not None:
        try:
            parsed = json.loads(payload)
        except ValueError as exc:
            raise UsageError(f"--payload is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise UsageError("--payload must be a JSON object, like '{\"priority\": \"high\"}'")
    result = skill.send(to, text, type_, reply_to, parsed, settings=obj.settings())
    _emit(result, as_json, result["id"])


@main.command()
@click.argument("seq", type=int, required=False)
@_json_option
@click.pass_obj
def ack(obj: CliContext, seq: int | None, as_json: bool) -> None:
    """Mark returned messages as done: all of them, or those up to SEQ."""
    from . import skill

    result = skill.ack(seq, settings=obj.settings())
    text = f"acked {len(result['acked'])} message(s); hub acked up to seq {result['hub_acked_up_to']}; {result['unacked']} returned and not acked"
    _emit(result, as_json, text)


@main.command()
@_json_option
@click.pass_obj
def status(obj: CliContext, as_json: bool) -> None:
    """Hub health, cursor, pending, leased and dead-lettered messages, hazards."""
    from . import skill
    from .render import render_mapping

    result = skill.status(settings=obj.settings())
    _emit(result, as_json, render_mapping(result))


@main.command()
@_json_option
@click.pass_obj
def agents(obj: CliContext, as_json: bool) -> None:
    """Who is online (connected to the hub by WebSocket)."""
    from . import skill
    from .render import neutralise

    result = skill.agents(settings=obj.settings())
    lines = [neutralise(f"{a.get('agent_id')}  {a.get('status') or ''}  {', '.join(map(str, a.get('capabilities') or []))}") for a in result["agents"]]
    _emit(result, as_json, "\n".join(lines) or "No agent is connected.")


@main.command()
@click.option("--disposition", type=click.Choice(["auto_reply", "store", "drop"]), help="Only this disposition.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Newest N entries.")
@_json_option
@click.pass_obj
def log(obj: CliContext, disposition: str | None, limit: int, as_json: bool) -> None:
    """What Tier 0 handled and why; peers' statuses; dead letters."""
    from . import skill
    from .render import render_log_text

    result = skill.log(disposition, limit, settings=obj.settings())
    _emit(result, as_json, render_log_text(result))


@main.group()
def config() -> None:
    """Write or show the configuration."""


@config.command("init")
@click.option("--register", is_flag=True, help="Register the agent id at the hub and store the token it gives.")
@click.option("--capabilities", metavar="LIST", help="Comma-separated capabilities.")
@click.option("--ignore-from", metavar="LIST", help="Comma-separated sender globs to ignore.")
@click.option("--status", "status_text", metavar="TEXT", help="Status text sent in auto-replies.")
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@click.pass_obj
def config_init(obj: CliContext, register: bool, capabilities: str | None, ignore_from: str | None, status_text: str | None, force: bool) -> None:
    """Write a config file (mode 0600) from the global options and environment."""
    from .skill import init_config

    path = init_config(obj.overrides, register=register, capabilities=capabilities, ignore_from=ignore_from, status=status_text, force=force)
    click.echo(f"wrote {path}")


@config.command("show")
@_json_option
@click.pass_obj
def config_show(obj: CliContext, as_json: bool) -> None:
    """The effective settings, token masked, and where each came from."""
    from .render import render_mapping

    settings = obj.settings()
    data = settings.public()
    data["sources"] = dict(settings.sources)
    _emit(data, as_json, render_mapping(data))


@main.command()
@click.argument("seq", type=int)
@click.argument("text")
@_json_option
@click.pass_obj
def reply(obj: CliContext, seq: int, text: str, as_json: bool) -> None:
    """Answer the message at SEQ: TEXT goes to its sender as a response to it."""
    from . import skill

    result = skill.reply(seq, text, settings=obj.settings())
    _emit(result, as_json, result["id"])


@main.command()
@click.argument("seq", type=int)
@_json_option
@click.pass_obj
def show(obj: CliContext, seq: int, as_json: bool) -> None:
    """Show one message still at the hub in full (untrusted content)."""
    from .render import neutralise
    from .skill import show_message

    msg = show_message(seq, settings=obj.settings())
    text = msg["text"] if msg["text"] is not None else json.dumps(msg["payload"], ensure_ascii=False, indent=2)
    header = neutralise(f"#{msg['seq']} from {msg['from']} to {msg['to']} ({msg['type']}):")  # one line, whatever the fields hold
    _emit(msg, as_json, f"{header}\n{text}")


@main.group()
def hub() -> None:
    """Run a local AgentCom-compatible hub."""


@hub.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=4000, show_default=True, help="0 picks a free port.")
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file [default: user data dir].")
@click.option("--mailbox-cap", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--ttl-days", type=click.FloatRange(min=0, min_open=True), default=7.0, show_default=True)
@click.option("--rate-limit", type=click.FloatRange(min=0, min_open=True), default=None, help="POST /api/message per agent per second [default: off].")
def hub_serve(host: str, port: int, db: str | None, mailbox_cap: int, ttl_days: float, rate_limit: float | None) -> None:
    """Serve the hub's HTTP contract until Ctrl-C or SIGTERM."""
    from .hub.server import serve

    try:
        serve(host, port, _hub_store(db, mailbox_cap, ttl_days), rate_limit)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


@hub.command("token")
@click.argument("agent_id")
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file [default: user data dir].")
def hub_token(agent_id: str, db: str | None) -> None:
    """Mint a token for AGENT_ID in the hub's database and print only the token."""
    store = _hub_store(db)
    try:
        click.echo(store.mint_token(agent_id))
    finally:
        store.close()


def _hub_store(db: str | None, mailbox_cap: int = 100, ttl_days: float = 7.0):
    import sqlite3

    from .hub.store import HubStore, default_db_path

    try:
        return HubStore(db or default_db_path(), mailbox_cap, ttl_days)
    except (sqlite3.Error, OSError) as exc:
        raise UsageError(f"cannot open the hub database {db or default_db_path()}: {exc}") from None


@main.command()
def demo() -> None:
    """A tour on an embedded hub: traffic, one check, a reply, an ack."""
    from .demo import run_demo

    run_demo(click.echo)


if __name__ == "__main__":  # pragma: no cover
    main()
