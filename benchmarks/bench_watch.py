#!/usr/bin/env python3
"""What `agentcom watch` costs and how fast it reacts, against the baselines beside this script in the same run.

  1. hub receives a message -> the wake request reaches the gateway (window 2 s, and 0)
  2. a ping -> the pong at the sender's mailbox
  3. `agentcom check --json` with a live watch (store only) vs `node poll_min.js`, empty mailbox
  4. the watch at rest: RSS and CPU over a quiet spell

Prints medians. Usage: python benchmarks/bench_watch.py [--samples N] [--rest SECONDS]
                        [--check-rounds N] [--check-repeat K]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import AGENTCOM, POLL_MIN_JS, LocalHub, median, timed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gateway import RecordingGateway  # noqa: E402


def start_watch(hub: LocalHub, env: dict[str, str], gateway: RecordingGateway, window: float) -> subprocess.Popen:
    (hub.dir / "alice.toml").write_text(
        f'[wake]\nurl = "{gateway.url}"\ntoken = "{gateway.token}"\nwindow = {window}\nmin_interval = 0\n'
    )
    log = open(hub.dir / f"watch-{window}.jsonl", "w")
    proc = subprocess.Popen(AGENTCOM + ["watch", "--jsonl"], env=env, stdout=log, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and '"connected"' not in (hub.dir / f"watch-{window}.jsonl").read_text():
        time.sleep(0.02)
    return proc


def wake_latency(hub: LocalHub, bob: str, gateway: RecordingGateway, samples: int) -> list[float]:
    out = []
    for n in range(samples):
        before = len(gateway.wakes)
        started = time.monotonic()
        hub.post(bob, {"to": "alice", "payload": {"text": f"sample {n}"}})
        while len(gateway.wakes) == before:
            time.sleep(0.001)
        out.append(gateway.wakes[before]["at"] - started)
    return out


def pong_latency(hub: LocalHub, bob: str, samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        started = time.monotonic()
        ping = hub.post(bob, {"to": "alice", "type": "ping", "payload": {}}).json()["id"]
        while not any(m["reply_to"] == ping for m in hub.poll("bob", bob)["messages"]):
            time.sleep(0.002)
        out.append(time.monotonic() - started)
    return out


def proc_usage(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds so far) of a process, from /proc."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, cpu


def live_watch_check(env: dict[str, str], rounds: int) -> None:
    """Part 3: `check --json` served by the live watch against `node poll_min.js`, alternating."""
    commands = {"check (live watch)": AGENTCOM + ["check", "--json"], "node poll_min.js": ["node", str(POLL_MIN_JS)]}
    if not shutil.which("node"):
        del commands["node poll_min.js"]
    wall: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, cmd in commands.items():
            w, c, _ = timed(cmd, env)
            wall[name].append(w)
            cpu[name].append(c)
    (cw, nw), (cc, nc) = ([median(d.get(k) or [float("nan")]) for k in wall] for d in (wall, cpu))
    print(
        f"3. empty mailbox: check with a live watch median {cw * 1000:.1f} ms wall / {cc * 1000:.1f} ms cpu, "
        f"node poll_min.js {nw * 1000:.1f} / {nc * 1000:.1f} ms: wall {cw / nw:.2f}x, cpu {cc / nc:.2f}x "
        f"({rounds} runs each, alternating)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--rest", type=float, default=60.0)
    parser.add_argument("--check-rounds", type=int, default=21, help="part 3: alternating runs of each command")
    parser.add_argument("--check-repeat", type=int, default=1, help="part 3: how many times to measure it")
    args = parser.parse_args()
    with LocalHub() as hub:
        alice, bob = hub.mint("alice"), hub.mint("bob")
        env = hub.env("alice", alice)
        gateway = RecordingGateway()
        try:
            for window in (2.0, 0.0):
                watch = start_watch(hub, env, gateway, window)
                lat = wake_latency(hub, bob, gateway, args.samples)
                print(
                    f"1. message at the hub -> wake at the gateway, window {window:g} s: median "
                    f"{median(lat) * 1000:7.1f} ms "
                    f"(min {min(lat) * 1000:.1f}, max {max(lat) * 1000:.1f}; {args.samples} samples)"
                )
                if window == 0.0:
                    pongs = pong_latency(hub, bob, args.samples)
                    print(
                        f"2. ping -> pong at the sender's mailbox: median {median(pongs) * 1000:7.1f} ms "
                        f"({args.samples} samples)"
                    )
                    subprocess.run(AGENTCOM + ["ack"], env=env, capture_output=True)  # the samples' leases: finished
                    for _ in range(args.check_repeat):
                        live_watch_check(env, args.check_rounds)
                    rss0, cpu0 = proc_usage(watch.pid)
                    time.sleep(args.rest)
                    rss1, cpu1 = proc_usage(watch.pid)
                    print(
                        f"4. watch at rest for {args.rest:g} s: RSS {rss1:.1f} MB, CPU "
                        f"{(cpu1 - cpu0) / args.rest * 100:.2f}% of one core"
                    )
                watch.terminate()
                watch.wait(timeout=30)
                subprocess.run(AGENTCOM + ["ack"], env=env, capture_output=True)
        finally:
            gateway.close()
    print(json.dumps({"python": sys.version.split()[0], "cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
