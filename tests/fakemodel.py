"""A scripted "model" for OpenClaw: an OpenAI-compatible chat-completions server on loopback.

OpenClaw asks `GET /v1/models`, then `POST /v1/chat/completions` with `stream: true` and
its tools (one of them `exec`). Each request goes to `script(request) -> Turn`, which the
test writes: it can assert on what the model was sent and answer with text or with a
tool call. Answers are streamed as server-sent events, as OpenClaw requires.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from hubprocess import QuietHTTPServer


@dataclass
class Turn:
    text: str | None = None
    tool: str | None = None  # e.g. "exec"
    arguments: dict[str, Any] | None = None


def text_of(message: dict[str, Any]) -> str:
    """The text of a chat message, whether its content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class FakeModel:
    def __init__(self, script: Callable[[dict[str, Any]], Turn]):
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.errors: list[str] = []  # assertion failures inside the script, reported by the test
        self._lock = threading.Lock()
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    return self._json(
                        {"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "tests"}]}
                    )
                self._json({"error": "not found"}, 404)

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                with model._lock:
                    model.requests.append(request)
                try:
                    turn = model.script(request)
                except AssertionError as exc:
                    model.errors.append(str(exc))
                    turn = Turn(text="(script assertion failed)")
                except Exception as exc:  # a bug in the script: say so, end the run
                    model.errors.append(f"{type(exc).__name__}: {exc}")
                    turn = Turn(text="(script error)")
                self._stream(turn, bool(request.get("stream")))

            def _json(self, body, status=200):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, turn: Turn, stream: bool):
                base = {
                    "id": f"chatcmpl-{len(model.requests)}",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "fake-model",
                }
                if turn.tool:
                    call = {
                        "index": 0,
                        "id": f"call_{len(model.requests)}",
                        "type": "function",
                        "function": {"name": turn.tool, "arguments": json.dumps(turn.arguments or {})},
                    }
                    chunks = [{"role": "assistant", "content": None, "tool_calls": [call]}]
                    finish = "tool_calls"
                else:
                    chunks = [{"role": "assistant", "content": turn.text or ""}]
                    finish = "stop"
                if not stream:
                    message = {"role": "assistant", "content": turn.text}
                    if turn.tool:
                        message["tool_calls"] = [chunks[0]["tool_calls"][0]]
                    return self._json(
                        {
                            **base,
                            "object": "chat.completion",
                            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                        }
                    )
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in chunks]
                events.append(
                    {
                        **base,
                        "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                )
                for event in events:
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
