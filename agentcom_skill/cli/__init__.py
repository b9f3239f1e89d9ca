"""The `agentcom` command line: parse, call one action of actions/, print through render.py.

Commands live in small modules by what they do (check, mailbox, messages, history, running, hubcmd)
and are imported only when run: `check` does not pay for building the other commands.
`base.py` holds what they share. Imports inside command functions follow the package's rule
(see docs/architecture.md): the network client, the watch, the hub, MCP, the demo and
`doctor` load late; everything else at the top of a module.
"""

from __future__ import annotations

import click

from .. import __version__
from .base import CONTEXT, EXIT_CODE_HELP, AgentComGroup, cli_obj, global_options

# command name -> "module:function" in this package, loaded when the command runs
COMMANDS = {
    "check": "check:check",
    "wait": "mailbox:wait",
    "ack": "mailbox:ack",
    "defer": "mailbox:defer",
    "dismiss": "mailbox:dismiss",
    "send": "messages:send",
    "reply": "messages:reply",
    "ping": "messages:ping",
    "join": "groups:join",
    "leave": "groups:leave",
    "channels": "groups:channels",
    "show": "history:show",
    "inbox": "history:inbox",
    "thread": "history:thread",
    "search": "history:search",
    "sent": "history:sent",
    "log": "history:log",
    "agents": "history:agents",
    "status": "running:status",
    "watch": "running:watch",
    "mcp": "running:mcp",
    "doctor": "running:doctor",
    "config": "running:config",
    "demo": "running:demo",
    "help": "running:help_command",
    "completion": "running:completion",
    "hub": "hubcmd:hub",
    "openclaw": "openclaw:openclaw",
}


@click.group(
    cls=AgentComGroup, lazy=COMMANDS, epilog=EXIT_CODE_HELP, context_settings=CONTEXT, invoke_without_command=False
)
@global_options
@click.version_option(__version__, "-V", "--version", prog_name="agentcom")  # the one source of the version
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
    cli_obj(ctx)


__all__ = ["main", "COMMANDS"]
