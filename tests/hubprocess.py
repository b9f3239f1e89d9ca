"""A real `agentcom hub serve` process on a free loopback port, for the tests and the
benchmarks (no pytest here, so the benchmark scripts can use it too)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "tests" / "data" / "day-gcu.jsonl"  # the project's labelled day of traffic (tests/data/README.md)

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningHub:
    """An `agentcom hub serve` subprocess; restartable on the same port and database."""

    def __init__(self, tmp: Path, *args: str):
        self.db = tmp / "hub.sqlite3"
        self.args = list(args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "hub.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentcom_skill", "hub", "serve", "--port", str(self.port), "--db", str(self.db), *self.args],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited: {self.log_path.read_text()}")
            time.sleep(0.05)
        raise RuntimeError("hub did not start")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=10)
        self.log.close()
        return code

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def mint(self, agent_id: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "agentcom_skill", "hub", "token", agent_id, "--db", str(self.db)],
            capture_output=True, text=True, check=True,
        )
        return out.stdout.strip()

    def post(self, token: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(self.url + "/api/message", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def poll(self, agent: str, token: str, since: int = 0) -> dict[str, Any]:
        r = requests.get(f"{self.url}/api/mailbox/{agent}?since={since}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        r.raise_for_status()
        return r.json()


def agent_env(hub: RunningHub, agent: str, token: str, tmp: Path, **extra: str) -> dict[str, str]:
    """A clean environment for one agent: nothing leaks in from the developer's own config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCOM_")}
    env.update(
        AGENTCOM_HUB_URL=hub.url,
        AGENTCOM_AGENT_ID=agent,
        AGENTCOM_TOKEN=token,
        AGENTCOM_STATE_DIR=str(tmp / "state"),
        AGENTCOM_CONFIG=str(tmp / f"{agent}.toml"),
    )
    env.update(extra)
    return env


def eventually(predicate, what: str, deadline: float = 60.0):
    """Poll `predicate` until it gives something true; the generous deadline only bounds a
    failing test (a loaded machine is slow, never wrong)."""
    give_up_at = time.monotonic() + deadline
    while time.monotonic() < give_up_at:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {deadline:g} s: {what}")


def load_trace() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    lines = [json.loads(line) for line in TRACE.read_text().splitlines() if line.strip()]
    return lines[0], lines[1:]
