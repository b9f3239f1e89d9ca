#!/usr/bin/env python3
"""What `agentcom mcp` costs a client's model on every turn: the tool definitions exactly as
`tools/list` sends them (through the MCP SDK's own stdio client), in characters and ~tokens
(characters / 4), for all tools and for a minimal `--tools check,reply,ack` set.

Usage: python benchmarks/bench_mcp.py   (needs the `mcp` extra)
"""

from __future__ import annotations

import json
import sys
import time

import anyio
from common import LocalHub
from mcp import Client
from mcp.client.stdio import StdioServerParameters


async def measure(env: dict[str, str], *args: str) -> tuple[int, int, float]:
    started = time.perf_counter()
    async with Client(
        StdioServerParameters(command=sys.executable, args=["-m", "agentcom_skill", "mcp", *args], env=env)
    ) as client:
        ready = time.perf_counter() - started
        tools = (await client.list_tools()).tools
    size = len(json.dumps([t.model_dump(by_alias=True, exclude_none=True) for t in tools], separators=(",", ":")))
    return len(tools), size, ready


def main() -> None:
    with LocalHub() as hub:
        env = hub.env("alice", hub.mint("alice"))
        for label, args in (("all tools", ()), ("--tools check,reply,ack", ("--tools", "check,reply,ack"))):
            count, size, ready = anyio.run(measure, env, *args)
            print(
                f"{label:26} {count} tools: {size} chars, ~{size // 4} tokens per turn; server ready in "
                f"{ready * 1000:.0f} ms"
            )


if __name__ == "__main__":
    main()
