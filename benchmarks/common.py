"""Shared pieces of the benchmark scripts: a local hub subprocess and the labelled trace."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
TRACE = SHARED / "traces" / "day-gcu.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalHub:
    """`agentcom hub serve` in a temporary folder, stopped on exit."""

    def __init__(self, *args: str):
        self.tmp = tempfile.TemporaryDirectory(prefix="agentcom-bench-")
        self.dir = Path(self.tmp.name)
        self.db = self.dir / "hub.sqlite3"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args

    def __enter__(self) -> "LocalHub":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentcom_skill", "hub", "serve", "--port", str(self.port), "--db", str(self.db), *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("hub did not start")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.tmp.cleanup()

    def mint(self, agent: str) -> str:
        out = subprocess.run([sys.executable, "-m", "agentcom_skill", "hub", "token", agent, "--db", str(self.db)], capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def post(self, token: str, body: dict) -> str:
        req = urllib.request.Request(
            self.url + "/api/message",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
        )
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())["id"]

    def env(self, agent: str, token: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCOM_")}
        env.update(
            AGENTCOM_HUB_URL=self.url,
            AGENTCOM_AGENT_ID=agent,
            AGENTCOM_TOKEN=token,
            AGENTCOM_STATE_DIR=str(self.dir / "state"),
            AGENTCOM_CONFIG=str(self.dir / f"{agent}.toml"),
        )
        env.update(extra)
        return env


def load_trace() -> tuple[dict, list[dict]]:
    lines = [json.loads(line) for line in TRACE.read_text().splitlines() if line.strip()]
    return lines[0], lines[1:]


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
