"""`agentcom openclaw install|uninstall`: the AgentCom channel plugin in the OpenClaw on PATH."""

from __future__ import annotations

from typing import Any

import click

from .base import CONTEXT, cli_obj, command, emit, json_option


@click.group(context_settings=CONTEXT, short_help="Install or remove the OpenClaw channel plugin.")
def openclaw() -> None:
    """Install or remove the AgentCom channel plugin of OpenClaw (its gateway then runs the watch)."""


def _text(result: dict[str, Any]) -> str:
    lines = [f"openclaw: {result['openclaw']}"]
    lines += [f"changed: {c}" for c in result["changed"]] or ["nothing to change: already so"]
    if result.get("next"):
        lines.append(f"next: {result['next']}")
    return "\n".join(lines)


@command(
    openclaw,
    "install",
    short_help="Install the plugin; point its channel at these settings.",
    examples="""
agentcom config init --hub-url http://localhost:4000 --agent-id alice --register
agentcom openclaw install        # then restart the gateway
""",
)
@json_option
@click.pass_context
def install(ctx: click.Context, as_json: bool) -> None:
    """Install the plugin and point its channel at these settings (idempotent).

    Writes `channels.agentcom` in OpenClaw's config: the agentcom executable, the config file,
    hub, agent id, state folder and token file (never the token). The gateway then starts
    `agentcom watch` itself, with the wake target set to the plugin; everything else comes
    from your agentcom settings."""
    from ..openclaw_plugin import install as run_install

    result = run_install(cli_obj(ctx).settings())
    emit(result, as_json, _text(result))


@command(
    openclaw,
    "uninstall",
    short_help="Remove the channel block and the plugin.",
    examples="""
agentcom openclaw uninstall      # then restart the gateway
""",
)
@json_option
def uninstall(as_json: bool) -> None:
    """Remove the channel block and the plugin (idempotent); your agentcom settings stay."""
    from ..openclaw_plugin import uninstall as run_uninstall

    result = run_uninstall()
    emit(result, as_json, _text(result))
