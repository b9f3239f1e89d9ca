"""A small A2A 1.0 JSON-RPC agent for the tests, with OpenClaw's A2A channel's quirks (test infrastructure only).

`POST /a2a/v1` takes `SendMessage` and `GetTask` with `Authorization: Bearer <token>` (anything
else: HTTP 401 with a JSON error); `GET /.well-known/agent-card.json` answers without a token.
What OpenClaw 2026.9.6 does, and so does this:
- a `SendMessage` into a context whose task still runs, or with a `messageId` seen before,
  gives a task that stays WORKING forever (recorded in `violations`: the client must never do it);
- text starting with `/` is REJECTED;
- `forget()` drops every task, as a gateway restart does: `GetTask` answers -32001;
- `rate_limit_next(n)` answers the next n requests with -32000 over HTTP 200 ("Peer is rate limited");
- `drop_reply_next(n)` takes the next n `SendMessage` requests (their tasks exist and run) and
  closes the connection without an answer, as a connection lost in flight does.

How a task ends is up to the test: `answer(text, context) -> Outcome | None` is called once per
task (None: the task stays WORKING until `finish(task_id, outcome)`). Nothing depends on time.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from hubprocess import QuietHTTPServer

TOKEN = "a2a-peer-token-" + "p" * 24


@dataclass
class Outcome:
    state: str = "TASK_STATE_COMPLETED"  # or TASK_STATE_FAILED, TASK_STATE_REJECTED
    text: str = ""


@dataclass
class Task:
    id: str
    context: str
    message_id: str
    text: str
    state: str = "TASK_STATE_WORKING"
    answer: str = ""
    stuck: bool = False  # a follow-up into a busy context, or a duplicate messageId: never ends
    created: float = field(default_factory=time.monotonic)


class A2AStandIn:
    def __init__(self, token: str = TOKEN, answer: Callable[[str, str], Outcome | None] | None = None):
        self.token = token
        self.answer = answer or (lambda text, context: Outcome(text="ok"))
        self.tasks: dict[str, Task] = {}
        self.message_ids: set[str] = set()
        self.requests: list[dict[str, Any]] = []  # every JSON-RPC request: {"method", "params", "at", "status"}
        self.violations: list[str] = []
        self._refuse = 0
        self._drop = 0
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path in ("/.well-known/agent-card.json", "/.well-known/agent.json"):
                    return self._send(
                        200,
                        {
                            "name": "standin",
                            "supportedInterfaces": [
                                {"url": standin.url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
                            ],
                            "capabilities": {"streaming": False, "pushNotifications": False},
                        },
                    )
                self._send(404, {"error": "not found"})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path != "/a2a/v1":
                    return self._send(404, {"error": "not found"})
                if self.headers.get("authorization") != f"Bearer {standin.token}":
                    with standin._lock:
                        standin.requests.append({"method": None, "params": None, "at": time.monotonic(), "status": 401})
                    return self._send(
                        401, {"error": "Unauthorized; configure channels.a2a.peers with a matching Bearer token"}
                    )
                try:
                    request = json.loads(raw)
                except ValueError:
                    return self._send(
                        200, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}
                    )
                reply = standin._handle(request)
                if request.get("method") == "SendMessage" and standin._take_drop():
                    self.close_connection = True  # the task exists; its id never reaches the client
                    return
                self._send(200, reply)

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = self.base + "/a2a/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    # what the tests steer ---------------------------------------------------------------

    def rate_limit_next(self, n: int) -> None:
        with self._lock:
            self._refuse = n

    def drop_reply_next(self, n: int) -> None:
        with self._lock:
            self._drop = n

    def _take_drop(self) -> bool:
        with self._lock:
            if self._drop <= 0:
                return False
            self._drop -= 1
            return True

    def forget(self) -> None:
        """A gateway restart: every task is gone."""
        with self._lock:
            self.tasks.clear()

    def finish(self, task_id: str, outcome: Outcome) -> None:
        with self._lock:
            task = self.tasks[task_id]
            task.state, task.answer = outcome.state, outcome.text

    def sends(self) -> list[dict[str, Any]]:
        """The SendMessage requests accepted so far (params.message of each)."""
        with self._lock:
            return [
                r["params"]["message"] for r in self.requests if r["method"] == "SendMessage" and r["status"] == 200
            ]

    def working(self) -> list[Task]:
        with self._lock:
            return [t for t in self.tasks.values() if t.state == "TASK_STATE_WORKING"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # the protocol -------------------------------------------------------------------------

    def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        rid, method, params = request.get("id"), request.get("method"), request.get("params") or {}
        with self._lock:
            entry = {"method": method, "params": params, "at": time.monotonic(), "status": 200}
            self.requests.append(entry)
            if self._refuse > 0:
                self._refuse -= 1
                entry["status"] = "rate_limited"
                return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32000, "message": "Peer is rate limited"}}
        if method in ("SendMessage", "message/send"):
            return self._send_message(rid, params)
        if method in ("GetTask", "tasks/get"):
            with self._lock:
                task = self.tasks.get(str(params.get("id")))
                if task is None:
                    return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32001, "message": "Task not found"}}
                return {"jsonrpc": "2.0", "id": rid, "result": self._task_json(task)}
        return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"Method not found: {method}"}}

    def _send_message(self, rid: Any, params: dict[str, Any]) -> dict[str, Any]:
        message = params.get("message") or {}
        parts = message.get("parts") or []
        if not message.get("messageId") or not parts:
            return {
                "jsonrpc": "2.0",
                "id": rid,
                "error": {"code": -32602, "message": "Invalid SendMessage params: message and parts required"},
            }
        text = "\n".join(p.get("text", "") for p in parts)
        context = message.get("contextId") or uuid.uuid4().hex
        with self._lock:
            task = Task(str(uuid.uuid4()), context, message["messageId"], text)
            if message["messageId"] in self.message_ids:
                task.stuck = True
                self.violations.append(f"messageId {message['messageId']} reused")
            busy = [t for t in self.tasks.values() if t.context == context and t.state == "TASK_STATE_WORKING"]
            if busy:
                task.stuck = True
                self.violations.append(f"a second task in busy context {context}")
            self.message_ids.add(message["messageId"])
            self.tasks[task.id] = task
            if text.startswith("/"):
                task.state, task.answer = "TASK_STATE_REJECTED", "A2A peers cannot execute slash commands."
        if not task.stuck and task.state == "TASK_STATE_WORKING":
            outcome = self.answer(text, context)
            if outcome is not None:
                with self._lock:
                    task.state, task.answer = outcome.state, outcome.text
        with self._lock:
            # as with returnImmediately: the first answer says WORKING, GetTask tells the rest
            shown = {**self._task_json(task), "status": {"state": "TASK_STATE_WORKING"}, "artifacts": []}
        return {"jsonrpc": "2.0", "id": rid, "result": {"task": shown}}

    @staticmethod
    def _task_json(task: Task) -> dict[str, Any]:
        status: dict[str, Any] = {"state": task.state}
        artifacts = []
        if task.state == "TASK_STATE_COMPLETED":
            artifacts = [{"artifactId": "a-" + task.id, "parts": [{"text": task.answer}]}]
        elif task.state != "TASK_STATE_WORKING" and task.answer:
            status["message"] = {"role": "ROLE_AGENT", "parts": [{"text": task.answer}]}
        return {"id": task.id, "contextId": task.context, "status": status, "artifacts": artifacts, "history": []}
