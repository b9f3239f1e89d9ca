#!/usr/bin/env python3
"""What commands cost as the store grows: 0 / 10k / 100k / 1M messages kept, all finished
(handled, the usual case) or all open (never handled by the agent).

For each size and kind, a store is built directly in SQLite (posting a million messages
takes hours) with the schema of the version measured, then, each a median of --runs child
processes (CPU seconds, user + system, the machine's load printed beside):

  check --peek --json, status --json, inbox --json, inbox --from, inbox --type,
  inbox --state dead, inbox --since, search (a word in every message, a word in one), log --json

and, in a child process of the version, the CPU of taking in one pushed batch of 50 new
messages (what the watch does with a burst: `run_check` over the frames, limit 0).

Usage: python benchmarks/bench_growth.py [--sizes 0,10000,100000,1000000] [--kinds finished,open]
       [--runs 3] [--baseline DIR]
With --baseline (a checkout of an earlier version: the folder holding its agentcom_skill),
each store is measured with both, the baseline first (the store is built with its schema
and migrated by this version, as an upgrade does; the migration's time is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import LocalHub, median, timed

AGENTCOM = [sys.executable, "-m", "agentcom_skill"]
SENDERS = 50
COMMANDS = {
    "check --peek": ["check", "--peek", "--json"],
    "status": ["status", "--json"],
    "inbox": ["inbox", "--json"],
    "inbox --from": ["inbox", "--from", "peer7", "--json"],
    "inbox --type": ["inbox", "--type", "review", "--json"],
    "inbox --state dead": ["inbox", "--state", "dead", "--json"],
    "inbox --since": ["inbox", "--since", "10s", "--json"],  # (the last 10 of the store were received then)
    "search common": ["search", "queue", "--json"],
    "search rare": ["search", "zanzibar", "--json"],
    "log": ["log", "--json"],
}

# Run in a child process of the version measured: one pushed batch of 50 taken in, CPU ms.
INTAKE_PROBE = r"""
import json, secrets, sys, time
from pathlib import Path
from agentcom_skill.config import load_settings
from agentcom_skill.message import MailboxBatch, Message
try:
    from agentcom_skill.actions.check import run_check
    from agentcom_skill.actions.common import open_store
except ImportError:  # a baseline from before the actions had rooms of their own
    from agentcom_skill.skill import open_store, run_check

class Frames:
    def __init__(self, batch): self.batch = batch
    def poll(self, agent_id, since=0): return self.batch
    def send(self, *a, **k): return secrets.token_hex(8)
    def ack(self, *a): return 0
    def agents(self): return []

s = load_settings()
cpu = []
with open_store(s) as store:
    for _ in range(5):
        msgs = [Message(seq=None, id=secrets.token_hex(8), sender=f"peer{n % 7}", to=s.agent_id, type="chat",
                        payload={"text": f"pushed {n}"}, reply_to=None, timestamp=int(time.time() * 1000))
                for n in range(50)]
        started = time.process_time()
        run_check(Frames(MailboxBatch(msgs, 0)), store, s, limit=0, peek=False, now=time.time(), via="push",
                  agents_check=False)
        cpu.append(time.process_time() - started)
cpu.sort()
print(json.dumps({"intake_ms": cpu[len(cpu) // 2] * 1000}))
"""


# Run in a child process of this version, on a store past retention_max: pruning steps for 5 s.
PRUNE_PROBE = r"""
import json, time
from agentcom_skill.config import load_settings
from agentcom_skill.actions.common import open_store
s = load_settings()
steps = []
with open_store(s) as store:
    pages = store._read("PRAGMA page_count")[0][0]
    ended = time.monotonic() + 5
    gone = 0
    while time.monotonic() < ended:
        started = time.monotonic()
        with store.write():
            dropped, aged = store.prune_step([], time.time(), s.retention_days, s.retention_max, s.open_max_days)
        store.vacuum_step()
        steps.append(time.monotonic() - started)
        gone += dropped + aged
        if not dropped + aged:
            break
    store._exec("PRAGMA wal_checkpoint(TRUNCATE)")
    after = store._read("PRAGMA page_count")[0][0]
steps.sort()
print(json.dumps({"rows": gone, "steps": len(steps), "median_ms": steps[len(steps) // 2] * 1000,
                  "max_ms": steps[-1] * 1000, "pages_before": pages, "pages_after": after}))
"""


def fill(db: Path, agent: str, size: int, kind: str) -> None:
    """`size` direct messages into an agent's store (created by the version measured)."""
    con = sqlite3.connect(db)
    columns = [r[1] for r in con.execute("PRAGMA table_info(messages)")]
    now = time.time()
    chunk = 50_000
    for start in range(0, size, chunk):
        rows = []
        for n in range(start, min(size, start + chunk)):
            msg_id = secrets.token_hex(8)
            sender = f"peer{n % SENDERS}"
            type_ = "review" if n % 100 == 0 else "chat"
            text = f"could you look at item {n} of the review queue? it blocks the release" + (
                " zanzibar" if n == size // 2 else ""
            )
            body = {
                "id": msg_id,
                "from": sender,
                "to": agent,
                "type": type_,
                "payload": {"text": text},
                "reply_to": None,
                "timestamp": int((now - size + n) * 1000),
                "seq": n + 1,
            }
            received = now - size + n
            row = {
                "id": msg_id,
                "seq": n + 1,
                "sender": sender,
                "recipient": agent,
                "type": type_,
                "body": json.dumps(body),
                "reply_to": None,
                "timestamp": body["timestamp"],
                "via": "poll",
                "received_at": received,
                "text": text,
                "disposition": "attention",
                "rule": 9,
                "reason": f"direct {type_}",
                "state": "done" if kind == "finished" else "pending",
                "priority": "normal",
                "broadcast": 0,
                "deliveries": 1 if kind == "finished" else 0,
                "expired": 0,
                "ever_shown": 1 if kind == "finished" else 0,
                "due": None,
                "finished_at": received if kind == "finished" else None,
            }
            rows.append(tuple(row[c] for c in columns))
        marks = ",".join("?" * len(columns))
        con.executemany(f"INSERT INTO messages ({','.join(columns)}) VALUES ({marks})", rows)
        con.commit()
    con.close()


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def measure(hub: LocalHub, token: str, state: str, extra: dict[str, str], runs: int) -> dict[str, float]:
    env = hub.env("gcu", token, AGENTCOM_STATE_DIR=state, **extra)
    out: dict[str, float] = {}
    for name, args in COMMANDS.items():
        cpu = [timed(AGENTCOM + args, env)[1] for _ in range(runs)]
        out[name] = median(cpu) * 1000
    probe = subprocess.run(
        [sys.executable, "-c", INTAKE_PROBE], env=env, capture_output=True, text=True, check=False, timeout=3600
    )
    if probe.returncode != 0:
        raise RuntimeError(probe.stderr[-2000:])
    out["intake of 50"] = json.loads(probe.stdout.strip().splitlines()[-1])["intake_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="0,10000,100000,1000000")
    parser.add_argument("--kinds", default="finished,open")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", help="a checkout of an earlier version to compare with")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    kinds = args.kinds.split(",")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; load {load()}")
    versions: dict[str, dict[str, str]] = {}
    if args.baseline:
        versions["baseline"] = {"PYTHONPATH": str(Path(args.baseline).resolve())}
    versions["this"] = {}
    build_with = next(iter(versions.values()))
    results: dict[tuple[str, str, int], dict[str, float]] = {}
    with LocalHub() as hub:
        token = hub.mint("gcu")
        (hub.dir / "gcu.toml").write_text("")
        for kind in kinds:
            for size in sizes:
                template = tempfile.mkdtemp(dir=hub.dir)
                timed(AGENTCOM + ["inbox"], hub.env("gcu", token, AGENTCOM_STATE_DIR=template, **build_with))
                db = next(Path(template).glob("*/messages.sqlite3"))
                started = time.perf_counter()
                fill(db, "gcu", size, kind)
                print(
                    f"\n{kind} x {size}: built in {time.perf_counter() - started:.1f} s,"
                    f" {db.stat().st_size / 1e6:.0f} MB; load {load()}",
                    flush=True,
                )
                for name, extra in versions.items():
                    state = tempfile.mkdtemp(dir=hub.dir)
                    shutil.copytree(template, state, dirs_exist_ok=True)
                    wall, cpu, _ = timed(AGENTCOM + ["inbox"], hub.env("gcu", token, AGENTCOM_STATE_DIR=state, **extra))
                    result = measure(hub, token, state, extra, args.runs)
                    results[(name, kind, size)] = result
                    print(
                        f"  {name:9} first open {wall:5.2f} s; "
                        + "  ".join(f"{k} {v:.0f}" for k, v in result.items())
                        + f"  (ms CPU; load {load()})",
                        flush=True,
                    )
                    if name == "this" and kind == "finished" and size > 50_000:
                        env = hub.env("gcu", token, AGENTCOM_STATE_DIR=state)
                        probe = subprocess.run(
                            [sys.executable, "-c", PRUNE_PROBE], env=env, capture_output=True, text=True, check=False
                        )
                        said = probe.stdout.strip() or probe.stderr[-500:]
                        print(f"  {name:9} pruning past retention_max for 5 s: {said}")
                    shutil.rmtree(state)
                shutil.rmtree(template)
    print("\nratios to the empty store (ms CPU, medians):")
    for name in versions:
        for kind in kinds:
            base = results.get((name, kind, sizes[0]))
            if not base:
                continue
            for size in sizes[1:]:
                row = results[(name, kind, size)]
                print(
                    f"  {name:9} {kind:8} {size:>8}: "
                    + "  ".join(f"{k} {row[k] / max(base[k], 0.001):.2f}x" for k in row),
                    flush=True,
                )


if __name__ == "__main__":
    main()
