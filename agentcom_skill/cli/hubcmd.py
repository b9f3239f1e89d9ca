"""`agentcom hub`: run the local AgentCom-compatible hub, mint tokens for it."""

from __future__ import annotations

import os
import shlex
import sqlite3
import stat
from pathlib import Path
from typing import Any

import click

from ..config import check_agent_id
from ..errors import UsageError
from .base import CONTEXT, FiniteRange


@click.group(context_settings=CONTEXT)
def hub() -> None:
    """Run a local AgentCom-compatible hub."""


@hub.command(
    "serve",
    context_settings=CONTEXT,
    short_help="Serve the hub's HTTP and WebSocket contract until Ctrl-C or SIGTERM.",
    epilog="""\b
Examples:
  agentcom hub serve --port 4000 &
  agentcom hub token alice
  agentcom hub serve --no-rate-limit            # tests and load runs
  agentcom hub serve --host 0.0.0.0 --admin-token-file ~/.hub-admin""",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on: 127.0.0.1 is this machine only, 0.0.0.0 every interface.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=4000, show_default=True, help="0 picks a free port.")
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file [default: user data dir].")
@click.option("--mailbox-cap", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@click.option("--ttl-days", type=FiniteRange(min=0, min_open=True, max=36500), default=7.0, show_default=True)
@click.option(
    "--rate-limit",
    "rate_limit",
    type=FiniteRange(min=0, min_open=True, max=1_000_000),
    default=None,
    help="Messages per second per sender once the burst is spent [default: 1, as the real hub].",
)
@click.option(
    "--rate-burst",
    "rate_burst",
    type=click.IntRange(1, 1_000_000),
    default=None,
    help="Messages a sender may send at once [default: 60, as the real hub].",
)
@click.option("--no-rate-limit", is_flag=True, help="No rate limits at all (sending, registering, listing agents).")
@click.option(
    "--admin-token-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Only the token in this private file may mint tokens (POST /admin/tokens); stricter than the real hub.",
)
@click.option(
    "--ws-idle-timeout",
    type=FiniteRange(min=0, min_open=True, max=86400),
    default=60.0,
    show_default=True,
    help="Close a WebSocket after this many seconds without a frame either way.",
)
@click.option(
    "--read-timeout",
    type=FiniteRange(min=0, min_open=True, max=86400),
    default=60.0,
    show_default=True,
    help="Close an HTTP connection idle this long, or whose request (headers and body) takes longer.",
)
@click.option(
    "--identify-timeout",
    type=FiniteRange(min=0, min_open=True, max=86400),
    default=60.0,
    show_default=True,
    help="Close a WebSocket that has not identified this many seconds after it opened.",
)
@click.option(
    "--ws-no-pong", is_flag=True, hidden=True, help="Never answer WebSocket pings (tests: a half-dead connection)."
)
def hub_serve(
    host: str,
    port: int,
    db: str | None,
    mailbox_cap: int,
    ttl_days: float,
    rate_limit: float | None,
    rate_burst: int | None,
    no_rate_limit: bool,
    admin_token_file: str | None,
    ws_idle_timeout: float,
    read_timeout: float,
    identify_timeout: float,
    ws_no_pong: bool,
) -> None:
    """Serve the hub's HTTP and WebSocket contract until Ctrl-C or SIGTERM.

    Rate limits are the real hub's unless --no-rate-limit: 60 messages at once per sender, then
    one a second; 10 registrations a minute per address; 120 agent listings, then two a second."""
    from ..hub.server import HubOptions, serve
    from ..hub.store import default_db_path

    if no_rate_limit and (rate_limit is not None or rate_burst is not None):
        raise UsageError("--no-rate-limit cannot be combined with --rate-limit or --rate-burst")
    options = HubOptions(
        rate_limits=not no_rate_limit,
        message_rate=1.0 if rate_limit is None else rate_limit,
        message_burst=60 if rate_burst is None else rate_burst,
        ws_idle_timeout=ws_idle_timeout,
        http_read_timeout=read_timeout,
        ws_identify_timeout=identify_timeout,
        ws_answer_pings=not ws_no_pong,
        admin_token=None if admin_token_file is None else _read_admin_token(admin_token_file),
    )
    db_path = db or str(default_db_path())
    mint = "agentcom hub token AGENT_ID" + ("" if db is None else f" --db {shlex.quote(db_path)}")
    limits = "off" if no_rate_limit else f"burst {options.message_burst:g}, then {options.message_rate:g}/s per sender"
    admin = "; minting only with the admin token" if options.admin_token else ""

    def started(url: str) -> None:
        click.echo(
            f"agentcom hub: serving {url} (database {db_path}; rate limits {limits}{admin}); mint a token with: {mint}",
            err=True,
        )

    try:
        serve(host, port, _hub_store(db, mailbox_cap, ttl_days), options, on_start=started)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _read_admin_token(path_text: str) -> str:
    """The admin token from its file: private (no access for group or others), one line."""
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


@hub.command(
    "token",
    context_settings=CONTEXT,
    short_help="Mint a token for AGENT_ID in the hub's database; print only the token.",
    epilog="\b\nExamples:\n  TOKEN=$(agentcom hub token alice)\n  agentcom hub token alice --db /tmp/x/hub.db",
)
@click.argument("agent_id")
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file [default: the same as `hub serve`].")
def hub_token(agent_id: str, db: str | None) -> None:
    """Mint a token for AGENT_ID in the hub's database; print only the token."""
    from ..hub.store import default_db_path

    check_agent_id(agent_id, "the command line")
    if db is None and not default_db_path().exists():
        raise UsageError(
            f"no hub database at {default_db_path()}: start `agentcom hub serve` first, "
            "or pass --db with the file your hub serves"
        )
    new = db is not None and not Path(db).exists()
    store = _hub_store(db)
    try:
        click.echo(store.mint_token(agent_id))
    finally:
        store.close()
    if new:  # minting before the first `hub serve --db` is fine; a typo in the path is not
        click.echo(
            f"agentcom: created a new hub database at {db}: serve it with `agentcom hub serve --db {db}`", err=True
        )


def _hub_store(db: str | None, mailbox_cap: int = 100, ttl_days: float = 7.0) -> Any:
    from ..hub.store import HubStore, default_db_path

    try:
        return HubStore(db or default_db_path(), mailbox_cap, ttl_days)
    except (sqlite3.Error, OSError) as exc:
        raise UsageError(f"cannot open the hub database {db or default_db_path()}: {exc}") from None
