"""A fault-injecting HTTP proxy in front of the real local hub (test infrastructure only).

Forwards every request to the hub unless a fault is armed; an armed fault answers the
next `times` requests (or all, with times=None) that match `path_prefix` instead.
With `tls=(certificate, key)` it serves https (a hub with a self-signed certificate).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler

import requests
from hubprocess import QuietHTTPServer

FAULTS = (
    "500",
    "502",
    "503",
    "429",
    "timeout",
    "reset",
    "non_json",
    "empty",
    "missing_messages",
    "seq_not_int",
    "payload_not_object",
    "messages_not_list",
    "huge",
    "connected",
    "slow",
    "drip",
    "echo_token",
    "nan_timestamp",
    "inf_timestamp",
    "deep",
    "bad_agents",
    "gzip_bomb",
    "corrupt_gzip",
    "wrong_encoding",
)


class FaultProxy:
    def __init__(self, upstream: str, tls: tuple[str, str] | None = None):
        self.upstream = upstream.rstrip("/")
        self.fault: str | None = None
        self.times: int | None = None
        self.path_prefix = "/"
        self.retry_after = "60"
        self.delay = 2.0
        self.huge_bytes = 200_000
        self.seen: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                proxy._handle(self)

            do_POST = do_GET

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            # the handshake happens in the handler's thread, so a failing client blocks no one
            self.server.socket = context.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False
            )
            self.url = f"https://localhost:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def arm(self, fault: str | None, times: int | None = None, path_prefix: str = "/") -> None:
        assert fault is None or fault in FAULTS, fault
        with self._lock:
            self.fault, self.times, self.path_prefix = fault, times, path_prefix

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _take_fault(self, path: str) -> str | None:
        with self._lock:
            if self.fault is None or not path.startswith(self.path_prefix):
                return None
            fault = self.fault
            if self.times is not None:
                self.times -= 1
                if self.times <= 0:
                    self.fault = None
            return fault

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("content-length") or 0)
        body = h.rfile.read(length) if length else b""
        fault = self._take_fault(h.path)
        status = self._fault(h, fault, body) if fault else self._forward(h, body)
        self.seen.append((h.command, h.path, status))

    def _reply(self, h, status: int, data: bytes, headers: dict[str, str] | None = None) -> int:
        h.send_response(status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)
        return status

    def _fault(self, h, fault: str, body: bytes = b"") -> int:
        if fault in ("500", "502", "503"):
            return self._reply(h, int(fault), b'{"error":"injected"}')
        if fault == "429":
            return self._reply(
                h,
                429,
                b'{"error":"rate_limited","retry_after_ms":60000,"tier":"normal"}',
                {"retry-after": self.retry_after},
            )
        if fault == "timeout":
            time.sleep(self.delay)
            h.close_connection = True
            return 0
        if fault == "slow":  # the real answer, late
            time.sleep(self.delay)
            return self._forward(h, b"")
        if fault == "drip":  # a valid reply, one byte at a time, forever slower than any deadline
            h.send_response(200)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", "100000")
            h.end_headers()
            try:
                for _ in range(100000):
                    h.wfile.write(b" ")
                    h.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
            h.close_connection = True
            return 200
        if fault == "echo_token":  # a hub that quotes the Authorization header back
            token = h.headers.get("authorization", "").partition(" ")[2]
            return self._reply(
                h,
                422,
                json.dumps(
                    {
                        "error": "validation_failed",
                        "errors": [{"field": "auth", "error": f"bad token {token}", "detail": token}],
                    }
                ).encode(),
            )
        if fault == "reset":
            h.close_connection = True
            return 0
        if fault == "connected":  # /api/agents lists every token holder as connected by WebSocket
            agent = h.headers.get("x-test-agent", "alice")
            return self._reply(
                h,
                200,
                json.dumps(
                    {
                        "agents": [
                            {
                                "agent_id": agent,
                                "name": agent,
                                "status": "idle",
                                "capabilities": [],
                                "connected_at": 1,
                                "fsm_state": "idle",
                            }
                        ]
                    }
                ).encode(),
            )
        if fault in ("nan_timestamp", "inf_timestamp", "deep"):
            value = {"nan_timestamp": "NaN", "inf_timestamp": "1e999", "deep": "1"}[fault]
            payload = "[" * 100_000 + "]" * 100_000 if fault == "deep" else "{}"
            message = (
                '{"id":"00000000000000aa","from":"bob","to":"alice","type":"chat",'
                f'"payload":{payload},"reply_to":null,"timestamp":{value},"seq":1}}'
            )
            body = f'{{"agent_id":"alice","messages":[{message}],"last_seq":1,"count":1}}'
            return self._reply(h, 200, body.encode())
        if fault == "bad_agents":
            return self._reply(
                h, 200, json.dumps({"agents": [{"agent_id": "bob", "status": "idle", "capabilities": 5}]}).encode()
            )
        if fault == "gzip_bomb":  # 1 GB of zeros in about 1 MB
            from conftest import gzip_bomb

            return self._reply(h, 200, gzip_bomb(), {"content-encoding": "gzip"})
        if fault == "corrupt_gzip":  # a POST is carried out first: the hub acted, the reply is broken
            if h.command == "POST":
                self._forward(h, body, reply=False)
            return self._reply(h, 200, b"\x1f\x8b\x08\x00 not deflate at all", {"content-encoding": "gzip"})
        if fault == "wrong_encoding":
            return self._reply(h, 200, b'{"agents":[]}', {"content-encoding": "br"})
        if fault == "non_json":
            return self._reply(h, 200, b"<html>gateway says hi</html>")
        if fault == "empty":
            return self._reply(h, 200, b"")
        if fault == "huge":
            one = {
                "id": "x" * 16,
                "from": "bob",
                "to": "alice",
                "type": "chat",
                "payload": {"text": "y" * self.huge_bytes},  # one message over the client's limit by itself
                "reply_to": None,
                "timestamp": 1,
                "seq": 1,
            }
            return self._reply(
                h, 200, json.dumps({"agent_id": "alice", "messages": [one], "last_seq": 1, "count": 1}).encode()
            )
        # shape faults: take the real answer and break it
        real = requests.get(
            self.upstream + h.path, headers={"authorization": h.headers.get("authorization", "")}, timeout=10
        ).json()
        msgs = real.get("messages", [])
        if fault == "missing_messages":
            real.pop("messages", None)
        elif fault == "messages_not_list":
            real["messages"] = {"0": msgs}
        elif fault == "seq_not_int":
            real["messages"] = msgs + [
                dict(msgs[0] if msgs else {"id": "z" * 16, "from": "bob", "payload": {}}, seq="7")
            ]
        elif fault == "payload_not_object":
            real["messages"] = msgs + [
                {
                    "id": "q" * 16,
                    "from": "bob",
                    "to": "alice",
                    "type": "chat",
                    "payload": "boom",
                    "reply_to": None,
                    "timestamp": 1,
                    "seq": 10**6,
                }
            ]
        return self._reply(h, 200, json.dumps(real).encode())

    def _forward(self, h, body: bytes, reply: bool = True) -> int:
        headers = {k: v for k, v in h.headers.items() if k.lower() in ("authorization", "content-type")}
        r = requests.request(h.command, self.upstream + h.path, data=body, headers=headers, timeout=30)
        if not reply:
            return r.status_code
        out = {"retry-after": r.headers["retry-after"]} if "retry-after" in r.headers else None
        return self._reply(h, r.status_code, r.content, out)
