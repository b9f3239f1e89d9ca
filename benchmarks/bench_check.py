#!/usr/bin/env python3
"""Cold-start and backlog cost of `agentcom check`, against the baselines beside this script.

In one run, alternating the commands:
  1. empty mailbox: `agentcom check --json` vs poll_min_requests.py (requests, the floor for
     agentcom's stack: target at most 1.3x), poll_min.py (stdlib) and poll_min.js (Node.js)
  2. backlogs of 1,000 / 10,000 / 100,000 mixed messages: wall time and peak RSS of one check
  3. `agentcom send` vs a minimal standard-library POST
Prints medians and ratios of wall time and of CPU time (user + system; on a machine shared
with other work, CPU time moves far less than wall time). With --instructions, also the
instructions each empty-mailbox command executes, counted by valgrind (the same on a busy
machine as on an idle one; valgrind must be installed).
Usage: python benchmarks/bench_check.py [--runs N] [--sizes 1000,10000,100000] [--instructions]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import AGENTCOM, POLL_MIN_JS, POLL_MIN_PY, POLL_MIN_REQUESTS, LocalHub, load_trace, median, timed

SEND_MIN = r"""
import json, os, sys, urllib.request
hub, token = os.environ["AGENTCOM_HUB_URL"], os.environ["AGENTCOM_TOKEN"]
body = json.dumps({"to": sys.argv[1], "payload": {"text": sys.argv[2]}}).encode()
req = urllib.request.Request(hub + "/api/message", data=body,
                             headers={"Authorization": "Bearer " + token, "content-type": "application/json"})
with urllib.request.urlopen(req, timeout=10) as r:
    print(json.loads(r.read())["id"])
"""


def compare(label: str, commands: dict[str, tuple[list[str], dict[str, str]]], runs: int) -> None:
    wall: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (cmd, env) in commands.items():  # alternate, so drift hits all alike
            w, c, _ = timed(cmd, env)
            wall[name].append(w)
            cpu[name].append(c)
    base = next(iter(commands))
    print(f"\n{label} ({runs} runs each, alternating; medians)")
    for name in commands:
        print(f"  {name:30} wall {median(wall[name]) * 1000:7.1f} ms   cpu {median(cpu[name]) * 1000:7.1f} ms")
    for name in list(commands)[1:]:
        print(
            f"  ratio {base} / {name}: wall {median(wall[base]) / median(wall[name]):.2f}x, "
            f"cpu {median(cpu[base]) / median(cpu[name]):.2f}x"
        )


def instructions(cmd: list[str], env: dict[str, str]) -> int:
    """Instructions one run executes (user space), counted by valgrind's callgrind."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(next(line for line in out.stderr.splitlines() if "Collected :" in line).split()[-1])


def count_instructions(commands: dict[str, tuple[list[str], dict[str, str]]]) -> None:
    counts = {name: instructions(cmd, env) for name, (cmd, env) in commands.items() if not name.startswith("node")}
    base = next(iter(counts))
    print("\n1b. empty mailbox, instructions executed (valgrind; node is left out)")
    for name, n in counts.items():
        print(f"  {name:30} {n / 1e6:8.1f} M" + (f"   ratio {counts[base] / n:.2f}x" if name != base else ""))


def configured_env(hub: LocalHub, agent: str, token: str) -> dict[str, str]:
    """How agentcom is set up in real use: a config file in the default place (platformdirs
    and TOML on the path), state in the default place; no AGENTCOM_* variables."""
    config_home, state_home = hub.dir / "xdg-config", hub.dir / "xdg-state"
    (config_home / "agentcom").mkdir(parents=True, exist_ok=True)
    (config_home / "agentcom" / "config.toml").write_text(
        f'hub_url = "{hub.url}"\nagent_id = "{agent}"\ntoken = "{token}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCOM_")}
    env.update(XDG_CONFIG_HOME=str(config_home), XDG_STATE_HOME=str(state_home))
    return env


def seed_backlog(db: Path, agent: str, n: int, lines: list[dict]) -> None:
    """Write n messages of the trace's mix straight into the hub's database (posting 100,000
    over HTTP would take minutes). The first is a direct chat, so a check never moves the hub's
    ack prefix and every run sees the same backlog."""
    con = sqlite3.connect(db)
    now = int(time.time() * 1000)
    rng = random.Random(7)
    first = next(line for line in lines if line["expect"] == "attention" and line["to"] == agent)
    rows = []
    for seq in range(1, n + 1):
        line = first if seq == 1 else rng.choice(lines)
        rows.append(
            (
                seq,
                agent,
                secrets.token_hex(8),
                line["from"],
                line["to"],
                line["type"],
                json.dumps(line["payload"]),
                line["reply_to"],
                now,
            )
        )
    con.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    con.commit()
    con.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--backlog-runs", type=int, default=5)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--instructions", action="store_true", help="also count instructions with valgrind")
    args = parser.parse_args()
    node = "missing"
    if shutil.which("node"):
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, node {node}")

    with LocalHub() as hub:
        token = hub.mint("bob")
        hub.mint("alice")
        env = hub.env("bob", token)
        check = (AGENTCOM + ["check", "--json"], configured_env(hub, "bob", token))
        print(f"agentcom: {' '.join(AGENTCOM)}")
        commands = {
            "agentcom check --json": check,
            "python3 poll_min_requests.py": ([sys.executable, str(POLL_MIN_REQUESTS)], env),
            "python3 poll_min.py": ([sys.executable, str(POLL_MIN_PY)], env),
        }
        if shutil.which("node"):
            commands["node poll_min.js"] = (["node", str(POLL_MIN_JS)], env)
        timed(*check)  # warm the page cache and create the state folder
        compare("1. empty mailbox", commands, args.runs)
        if args.instructions and shutil.which("valgrind"):
            count_instructions(commands)
        compare(
            "3. send one message",
            {
                "agentcom send": (AGENTCOM + ["send", "alice", "hello"], env),
                "python3 minimal POST": ([sys.executable, "-c", SEND_MIN, "alice", "hello"], env),
            },
            args.runs,
        )

    header, lines = load_trace()
    agent = header["agent"]
    print(
        f"\n2. backlog of mixed traffic (the trace's mix), one `agentcom check --json` with fresh state "
        f"({args.backlog_runs} runs each)"
    )
    for n in [int(s) for s in args.sizes.split(",")]:
        with LocalHub("--mailbox-cap", str(max(20000, n))) as hub:
            tokens = {name: hub.mint(name) for name in [agent, *header["peers"]]}
            seed_backlog(hub.db, agent, n, lines)
            (hub.dir / f"{agent}.toml").write_text(
                f"capabilities = {json.dumps(header['capabilities'])}\n"
                f"ignore_from = {json.dumps(header['ignore_from'])}\n"
                f"mailbox_cap = {max(20000, n)}\nauto_reply_limit = 1000\n"
            )
            walls, rss = [], []
            for _ in range(args.backlog_runs):
                state = tempfile.mkdtemp(dir=hub.dir)
                wall, _, peak = timed(
                    AGENTCOM + ["check", "--json"], hub.env(agent, tokens[agent], AGENTCOM_STATE_DIR=state)
                )
                walls.append(wall)
                rss.append(peak)
            print(
                f"  {n:>7} messages: median {median(walls):6.2f} s  peak RSS {median(rss) / 1024:6.1f} MB  "
                f"({median(walls) / n * 1e6:6.1f} us/message)"
            )


if __name__ == "__main__":
    main()
