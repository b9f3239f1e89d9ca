#!/usr/bin/env python3
"""A sustained stream at a live watch: does it keep up as what it keeps grows, and do its
Tier 0 answers stay quick meanwhile?

A local hub; `agentcom watch` for one agent (no wake configured: every message stays open,
the worst case for a store that grows); --senders senders post --count direct chats to it as
fast as the hub takes them, while two probers each send it a ping every 2 s (under the
auto-reply budget) and time the pong in their mailbox. Printed:

  - the posting rate, and how long after the last post everything was stored;
  - the watch's intake rate over each 10,000 stored (or each tenth of the stream);
  - pong latency percentiles during the stream and at rest (before it);
  - the watch's peak RSS;
  - then a second, endless stream, and SIGTERM to the watch in the middle of it: the time
    it took to exit.

Usage: python benchmarks/bench_stream.py [--count 20000] [--senders 8]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from common import LocalHub, median

AGENTCOM = [sys.executable, "-m", "agentcom_skill"]
PING_EVERY = 2.0


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


class Prober(threading.Thread):
    """Sends pings to the agent and times each pong that comes back to its mailbox."""

    def __init__(self, hub: LocalHub, name: str, token: str, target: str):
        super().__init__(daemon=True)
        self.hub, self.name, self.token, self.target = hub, name, token, target
        self.stop = threading.Event()
        self.samples: list[tuple[float, float]] = []  # (sent at, latency)
        self.missing = 0

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with requests.Session() as http:
            while not self.stop.is_set():
                sent_at = time.monotonic()
                ping = http.post(
                    self.hub.url + "/api/message",
                    json={"to": self.target, "type": "ping", "payload": {"text": "ping"}},
                    headers=headers,
                    timeout=60,
                ).json()["id"]
                got = None
                while got is None and time.monotonic() - sent_at < 30:
                    box = http.get(f"{self.hub.url}/api/mailbox/{self.name}?since=0", headers=headers, timeout=60)
                    entries = box.json()["messages"]
                    if any(m.get("reply_to") == ping for m in entries):
                        got = time.monotonic() - sent_at
                    if entries:
                        http.post(
                            f"{self.hub.url}/api/mailbox/{self.name}/ack",
                            json={"seq": entries[-1]["seq"]},
                            headers=headers,
                            timeout=60,
                        )
                    if got is None:
                        time.sleep(0.02)
                if got is None:
                    self.missing += 1
                else:
                    self.samples.append((sent_at, got))
                self.stop.wait(max(0.0, PING_EVERY - (time.monotonic() - sent_at)))


def stored(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as con:
        return con.execute("SELECT COUNT(*) FROM messages WHERE type = 'chat'").fetchone()[0]


def peak_rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post_stream(hub: LocalHub, tokens: list[str], agent: str, count: int, stop: threading.Event) -> list[float]:
    """Post `count` (None: until `stop`) chats from all senders at once; the time of each post."""
    per = None if count is None else count // len(tokens)

    def blast(token: str) -> list[float]:
        times = []
        with requests.Session() as http:
            for n in itertools.count() if per is None else range(per):
                if stop.is_set():
                    break
                try:
                    http.post(
                        hub.url + "/api/message",
                        json={"to": agent, "payload": {"text": f"stream item {n}: could you look at it?"}},
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=60,
                    ).raise_for_status()
                except requests.RequestException:
                    if per is None:  # the endless stream goes on whatever a post met
                        continue
                    raise
                times.append(time.monotonic())
        return times

    with ThreadPoolExecutor(len(tokens)) as pool:
        return sorted(t for times in pool.map(blast, tokens) for t in times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--senders", type=int, default=8)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"load before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with LocalHub("--mailbox-cap", "1000") as hub:
        token = hub.mint("alice")
        tokens = [hub.mint(f"s{n}") for n in range(args.senders)]
        probers_tokens = {f"probe{n}": hub.mint(f"probe{n}") for n in range(2)}
        env = hub.env("alice", token)
        (hub.dir / "alice.toml").write_text("")
        out = hub.dir / "watch.jsonl"
        watch = subprocess.Popen(
            AGENTCOM + ["watch", "--jsonl"], env=env, stdout=open(out, "w"), stderr=subprocess.DEVNULL
        )
        try:
            while '"connected"' not in out.read_text():
                time.sleep(0.1)
            db = next((hub.dir / "state").glob("*/messages.sqlite3"))
            probers = [Prober(hub, name, tok, "alice") for name, tok in probers_tokens.items()]
            for p in probers:
                p.start()
            time.sleep(4 * PING_EVERY)  # pongs at rest
            at_rest = [lat for p in probers for _, lat in p.samples]

            progress: list[tuple[float, int]] = []
            done = threading.Event()

            def watch_store() -> None:
                while not done.is_set():
                    progress.append((time.monotonic(), stored(db)))
                    time.sleep(0.2)

            counter = threading.Thread(target=watch_store, daemon=True)
            counter.start()
            started = time.monotonic()
            posts = post_stream(hub, tokens, "alice", args.count, threading.Event())
            last_post = posts[-1]
            total = len(posts)
            deadline = time.monotonic() + 600
            while stored(db) < total and time.monotonic() < deadline:
                time.sleep(0.05)
            all_stored = time.monotonic()
            done.set()
            counter.join()
            kept = stored(db)
            during = [lat for p in probers for t, lat in p.samples if started <= t <= last_post]
            missing = sum(p.missing for p in probers)
            print(
                f"\nstream of {total} from {args.senders} senders: posted in {last_post - started:.1f} s"
                f" ({total / (last_post - started):.0f}/s); {kept} stored, the last {all_stored - last_post:.2f} s"
                f" after the last post"
            )
            step = 10000 if total >= 20000 else max(1, total // 10)
            marks = list(range(step, kept + 1, step))
            previous = (started, 0)
            for mark in marks:
                reached = next((t for t, n in progress if n >= mark), all_stored)
                rate = (mark - previous[1]) / max(1e-9, reached - previous[0])
                print(f"  intake from {previous[1]:>6} to {mark:>6} stored: {rate:6.0f} messages/s")
                previous = (reached, mark)
            print(
                f"pongs at rest: {len(at_rest)}, median {median(at_rest) * 1000:.0f} ms"
                if at_rest
                else "pongs at rest: none"
            )
            if during:
                print(
                    f"pongs during the stream: {len(during)}, p50 {percentile(during, 50) * 1000:.0f} ms,"
                    f" p90 {percentile(during, 90) * 1000:.0f} ms, max {max(during) * 1000:.0f} ms;"
                    f" {missing} without a pong within 30 s"
                )
            else:
                print(f"pongs during the stream: none ({missing} without a pong within 30 s)")
            print(f"watch peak RSS: {peak_rss(watch.pid):.1f} MB")
            for p in probers:
                p.stop.set()

            # SIGTERM in the middle of an endless stream
            stop = threading.Event()
            streamer = threading.Thread(target=post_stream, args=(hub, tokens, "alice", None, stop), daemon=True)
            streamer.start()
            time.sleep(5)
            term_at = time.monotonic()
            watch.send_signal(signal.SIGTERM)
            try:
                watch.wait(timeout=300)
                print(f"SIGTERM during a stream: exited after {time.monotonic() - term_at:.2f} s")
            except subprocess.TimeoutExpired:
                print("SIGTERM during a stream: still running after 300 s")
            stop.set()
            streamer.join(timeout=60)
            print(f"load after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait()


if __name__ == "__main__":
    main()
