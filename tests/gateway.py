"""A small recording stand-in for the OpenClaw gateway's hooks (test infrastructure only).

Answers `POST /hooks/agent` and `POST /hooks/wake` like the gateway does (bearer token,
200 with `ok`), records every request, and can be told to fail: `mode` "ok", "503",
"429" (with `retry-after`), "401".
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler

from hubprocess import QuietHTTPServer


class RecordingGateway:
    def __init__(self, token: str = "hook-token-" + "h" * 20):
        self.token = token
        self.mode = "ok"
        self.retry_after = "1"
        self.on_wake = None  # called with an accepted wake before it is answered (an agent turn the gateway waits on)
        self.requests: list[dict] = []  # every request, failed ones included
        self.wakes: list[dict] = []  # accepted ones: {"path", "body", "headers", "at"}
        self._lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                entry = {
                    "path": self.path,
                    "body": body,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "at": time.monotonic(),
                }
                with gateway._lock:
                    gateway.requests.append(entry)
                    mode = gateway.mode
                if self.headers.get("authorization") != f"Bearer {gateway.token}" or mode == "401":
                    return self._send(401, b"Unauthorized", "text/plain")
                if mode == "503":
                    return self._send(503, b'{"ok":false}')
                if mode == "429":
                    return self._send(429, b'{"ok":false}', extra={"retry-after": gateway.retry_after})
                if self.path not in ("/hooks/agent", "/hooks/wake"):
                    return self._send(404, b'{"ok":false}')
                needed = "message" if self.path == "/hooks/agent" else "text"
                if not isinstance(body, dict) or not body.get(needed):  # as OpenClaw: the token first, then the body
                    return self._send(400, json.dumps({"ok": False, "error": f"{needed} required"}).encode())
                with gateway._lock:
                    gateway.wakes.append(entry)
                if gateway.on_wake is not None:
                    gateway.on_wake(entry)
                self._send(200, json.dumps({"ok": True, "runId": f"run-{len(gateway.wakes)}"}).encode())

            def _send(self, status, data, ctype="application/json", extra=None):
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def entries(self) -> list[int]:
        """How many messages each accepted /hooks/agent wake carried (entries inside the fence)."""
        with self._lock:
            wakes = [w for w in self.wakes if w["path"] == "/hooks/agent"]
        counts = []
        for w in wakes:
            lines = w["body"]["message"].splitlines()
            opened = [i for i, line in enumerate(lines) if line.startswith("<<<AGENTCOM_UNTRUSTED_")]
            closed = [i for i, line in enumerate(lines) if line.startswith("<<<END_AGENTCOM_UNTRUSTED_")]
            inside = lines[opened[0] + 1 : closed[0]] if opened and closed else []
            counts.append(sum(1 for line in inside if not line.startswith("  ")))
        return counts

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
