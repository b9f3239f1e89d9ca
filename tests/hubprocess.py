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
import traceback
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import requests

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "tests" / "data" / "day-gcu.jsonl"  # the project's labelled day of traffic (tests/data/README.md)


class QuietHTTPServer(ThreadingHTTPServer):
    """The tests' own HTTP servers (stand-ins, proxies): a client that goes away mid-reply, as
    the fault tests provoke, is no error; any other goes to the real stderr, never into the
    captured stderr of an agentcom run in this process meanwhile."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        traceback.print_exc(file=sys.__stderr__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LIMIT_OPTIONS = ("--rate-limit", "--rate-burst", "--no-rate-limit")


class RunningHub:
    """An `agentcom hub serve` subprocess; restartable on the same port and database.

    Without rate limits unless asked (`rate_limits=True`, or an option that sets them): the
    suite's bursts are far above the real hub's limits, which have tests of their own."""

    def __init__(self, tmp: Path, *args: str, rate_limits: bool = False):
        self.db = tmp / "hub.sqlite3"
        self.args = list(args)  # tests may replace them before a restart
        self.rate_limits = rate_limits
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "hub.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentcom_skill",
                "hub",
                "serve",
                "--port",
                str(self.port),
                "--db",
                str(self.db),
                *self.command_args(),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + 60  # seconds on an idle machine; a busy one is slow, never wrong
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

    def command_args(self) -> list[str]:
        if self.rate_limits or any(arg in LIMIT_OPTIONS for arg in self.args):
            return self.args
        return [*self.args, "--no-rate-limit"]

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
        """A token for `agent_id`, minted into the running hub's database (what `agentcom hub
        token` does, in this process: a command per token cost the suite tens of seconds)."""
        from agentcom_skill.hub.store import HubStore

        store = HubStore(self.db)
        try:
            return store.mint_token(agent_id)
        finally:
            store.close()

    def post(self, token: str, body: dict[str, Any]) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return requests.post(self.url + "/api/message", json=body, headers=headers, timeout=10)

    def post_path(self, token: str, path: str, body: dict[str, Any]) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return requests.post(self.url + path, json=body, headers=headers, timeout=10)

    def poll(self, agent: str, token: str, since: int = 0) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        r = requests.get(f"{self.url}/api/mailbox/{agent}?since={since}", headers=headers, timeout=10)
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


class RawReply(NamedTuple):
    status_line: bytes
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the hub closed the connection after this reply


def raw_exchange(port: int, request: bytes, then: bytes = b"", timeout: float = 30) -> list[RawReply]:
    """Send bytes as a client would, byte for byte (a Node script's chunked POST, a broken
    client), and read every reply until the hub closes the connection or goes quiet. `then` is
    sent after the first reply, on the same connection."""
    replies: list[RawReply] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        reader = sock.makefile("rb")
        for extra in (then, None):
            reply = _read_reply(reader)
            if reply is None:
                break
            replies.append(reply)
            if reply.closed or extra is None or not extra:
                break
            sock.sendall(extra)
    return replies


def _read_reply(reader: Any) -> RawReply | None:
    status_line = reader.readline()
    if not status_line:
        return None
    parts = status_line.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() else 0
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", "0")))
    closed = headers.get("connection", "").lower() == "close"
    return RawReply(status_line, status, headers, body, closed)


def chunked(body: bytes, sizes: tuple[int, ...] = (55,)) -> bytes:
    """`body` in chunks the way Node writes them (a hex size line, the bytes, CRLF; then 0)."""
    out, start, i = b"", 0, 0
    while start < len(body):
        size = sizes[min(i, len(sizes) - 1)]
        part = body[start : start + size]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
        start, i = start + size, i + 1
    return out + b"0\r\n\r\n"


def node_post(path: str, body: Any, token: str | None = None, *, keep_alive: bool = True) -> bytes:
    """A POST as the hub project's Node scripts send it: JSON, no length, chunked."""
    data = json.dumps(body).encode()
    head = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    if token is not None:
        head.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + chunked(data)
