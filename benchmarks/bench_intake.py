#!/usr/bin/env python3
"""What storing messages costs: a large first `check` and a burst pushed at a live watch.

  1. a first `agentcom check --json` of 10,000 messages that all need attention (direct chats
     from seven peers), fresh state each run: wall time and peak RSS
  2. a burst of direct messages from six senders at a connected `agentcom watch` (ping 0.5 s,
     pong 0.5 s): how many were kept (watch store + still at the hub, must be all) and how fast
     the watch stored them

Usage: python benchmarks/bench_intake.py [--runs 5] [--size 10000] [--burst 600] [--baseline DIR]
With --baseline (a checkout of an earlier version), part 1 alternates it with this one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from common import LocalHub, median, timed

AGENTCOM = [sys.executable, "-m", "agentcom_skill"]


def seed_attention(db: Path, agent: str, n: int) -> None:
    """n direct chats straight into the hub's database (posting them over HTTP takes minutes)."""
    con = sqlite3.connect(db)
    now = int(time.time() * 1000)
    rows = [
        (
            seq,
            agent,
            secrets.token_hex(8),
            f"peer{seq % 7}",
            agent,
            "chat",
            json.dumps({"text": f"could you look at item {seq} of the review queue? it blocks the release"}),
            None,
            now,
        )
        for seq in range(1, n + 1)
    ]
    con.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    con.commit()
    con.close()


def first_check(size: int, runs: int, baseline: str | None) -> None:
    print(f"\n1. first check of {size} messages that all need attention ({runs} runs, fresh state each)")
    versions = {"this version": {}}
    if baseline:
        versions[f"baseline {baseline}"] = {"PYTHONPATH": baseline}
    with LocalHub("--mailbox-cap", str(max(20000, size))) as hub:
        token = hub.mint("gcu")
        seed_attention(hub.db, "gcu", size)
        (hub.dir / "gcu.toml").write_text(f"mailbox_cap = {max(20000, size)}\n")
        walls: dict[str, list[float]] = {name: [] for name in versions}
        rss: dict[str, list[int]] = {name: [] for name in versions}
        for _ in range(runs):
            for name, extra in versions.items():  # alternate, so drift hits all alike
                state = tempfile.mkdtemp(dir=hub.dir)
                wall, _, peak = timed(
                    AGENTCOM + ["check", "--json"], hub.env("gcu", token, AGENTCOM_STATE_DIR=state, **extra)
                )
                walls[name].append(wall)
                rss[name].append(peak)
        for name in versions:
            print(
                f"  {name:40} median {median(walls[name]):6.2f} s  peak RSS {median(rss[name]) / 1024:6.1f} MB  "
                f"({median(walls[name]) / size * 1e6:6.1f} us/message)"
            )
        if baseline:
            names = list(versions)
            print(f"  ratio this / baseline: {median(walls[names[0]]) / median(walls[names[1]]):.2f}x")


def burst(count: int) -> None:
    senders = 6
    print(f"\n2. a burst of {count} direct messages from {senders} senders at a live watch (ping 0.5 s, pong 0.5 s)")
    with LocalHub() as hub:
        token = hub.mint("alice")
        tokens = [hub.mint(f"s{n}") for n in range(senders)]
        env = hub.env("alice", token)
        (hub.dir / "alice.toml").write_text("watch_ping_interval = 0.5\nwatch_pong_timeout = 0.5\n")
        out = hub.dir / "watch.jsonl"
        watch = subprocess.Popen(
            AGENTCOM + ["watch", "--jsonl"], env=env, stdout=open(out, "w"), stderr=subprocess.DEVNULL
        )
        try:
            while '"connected"' not in out.read_text():
                time.sleep(0.1)
            per = count // senders

            def blast(sender_token: str) -> list[str]:
                with requests.Session() as http:
                    return [
                        http.post(
                            hub.url + "/api/message",
                            json={"to": "alice", "payload": {"text": f"burst {n}"}},
                            headers={"Authorization": f"Bearer {sender_token}"},
                            timeout=60,
                        ).json()["id"]
                        for n in range(per)
                    ]

            started = time.perf_counter()
            with ThreadPoolExecutor(senders) as pool:
                sent = {i for ids in pool.map(blast, tokens) for i in ids}
            posted = time.perf_counter() - started
            db = next((hub.dir / "state").glob("*/messages.sqlite3"))
            deadline = time.monotonic() + 120
            while True:
                with sqlite3.connect(db) as con:
                    kept = {r[0] for r in con.execute("SELECT id FROM messages")}
                at_hub = {m["id"] for m in hub.poll("alice", token)["messages"]}
                if sent <= kept | at_hub or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            stored = time.perf_counter() - started
            lost = len(sent - kept - at_hub)
            reconnects = out.read_text().count('"disconnected"')
            print(
                f"  sent {len(sent)} in {posted:.2f} s; all accounted for after {stored:.2f} s: "
                f"{len(sent & kept)} kept by the watch, {len(sent & at_hub - kept)} still at the hub, {lost} lost; "
                f"{reconnects} disconnect(s)"
            )
        finally:
            watch.terminate()
            watch.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--burst", type=int, default=600)
    parser.add_argument("--baseline", help="a checkout of an earlier version to compare part 1 with")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    first_check(args.size, args.runs, args.baseline)
    if args.burst:
        burst(args.burst)


if __name__ == "__main__":
    main()
