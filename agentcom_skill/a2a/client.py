"""`A2AClient`: JSON-RPC to one A2A endpoint (`SendMessage`, `GetTask`) through the one HTTP
layer (`transport`), and `read_reply`, which reads what came back (pure)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..transport import (
    BearerAuth,
    BodyTooLarge,
    DeadlinePassed,
    Peer,
    TransportError,
    UndecodableBody,
    exchange,
    new_session,
    retry_after_seconds,
)

A2A_PEER = Peer("A2A endpoint", "wake.url")
WORKING_STATES = ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING", "TASK_STATE_INPUT_REQUIRED", "TASK_STATE_AUTH_REQUIRED")
FAILED_STATES = {"TASK_STATE_FAILED": "failed", "TASK_STATE_REJECTED": "rejected", "TASK_STATE_CANCELED": "failed"}


class A2AReply(NamedTuple):
    """One A2A exchange, read.

    kind: task (a task came back) | lost (-32001: the agent no longer knows it) |
    rate_limited | unauthorized | not_sent (cannot have reached the agent: retry safely) |
    maybe_sent (may have reached it, outcome unknown) | error (refused: bad params and the like).
    `detail` is in our words; what the agent's side said (an error message) is in `quoted`,
    which only ever reaches an LLM fenced."""

    kind: str
    detail: str = ""
    task_id: str | None = None
    state: str | None = None
    text: str | None = None
    retry_after: float | None = None
    quoted: str | None = None


def read_reply(status: int, headers: Mapping[str, str], body: bytes) -> A2AReply:
    """An HTTP reply of the JSON-RPC endpoint, read (pure)."""
    retry_after = retry_after_seconds(headers.get("retry-after"))
    if status in (401, 403):
        return A2AReply("unauthorized", f"the A2A endpoint refused the token (HTTP {status})")
    if status == 429:
        return A2AReply("rate_limited", "HTTP 429", retry_after=retry_after)
    if status in (502, 503, 504):  # OpenClaw answers 503 while its plugins start
        return A2AReply("not_sent", f"HTTP {status}", retry_after=retry_after)
    if status >= 500:  # it failed while handling the request: the task may exist
        return A2AReply("maybe_sent", f"HTTP {status}")
    if status != 200:
        return A2AReply("error", f"HTTP {status}: not an A2A JSON-RPC endpoint?")
    try:
        data = json.loads(body)
    except ValueError:
        return A2AReply("maybe_sent", "the reply is not JSON")
    if not isinstance(data, dict):
        return A2AReply("maybe_sent", "the reply is not a JSON-RPC object")
    error = data.get("error")
    if isinstance(error, dict):
        return _rpc_error(error, retry_after)
    result = data.get("result")
    task = result.get("task", result) if isinstance(result, dict) else None
    if not isinstance(task, dict) or not isinstance(task.get("id"), str) or not isinstance(task.get("status"), dict):
        return A2AReply("maybe_sent", "the reply carries no task")
    status_obj = task["status"]
    state = str(status_obj.get("state"))
    return A2AReply(
        "task",
        state,
        task["id"],
        state,
        _texts(task.get("artifacts")) if state == "TASK_STATE_COMPLETED" else _texts([status_obj.get("message")]),
    )


def _rpc_error(error: dict[str, Any], retry_after: float | None) -> A2AReply:
    """A JSON-RPC error object, read: what its code means for us, its message quoted."""
    code, message = error.get("code"), str(error.get("message"))[:200]
    shown = code if isinstance(code, int) and not isinstance(code, bool) else "?"
    if code == -32001:
        return A2AReply("lost", "task not found (-32001)", quoted=message)
    if code == -32000 and "rate limit" in message.lower():  # OpenClaw: "Peer is rate limited"
        return A2AReply("rate_limited", "refused (-32000)", retry_after=retry_after, quoted=message)
    if code in (-32000, -32603):  # a server error ("A2A request could not be processed"): it may have acted
        return A2AReply("maybe_sent", f"server error ({shown})", quoted=message)
    return A2AReply("error", f"JSON-RPC error {shown}", quoted=message)


def _texts(holders: Any) -> str:
    """The text parts of artifacts (or of a status message), joined."""
    out = []
    for holder in holders if isinstance(holders, list) else []:
        parts = holder.get("parts") if isinstance(holder, dict) else None
        for part in parts if isinstance(parts, list) else []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
    return "\n".join(out)


class A2AClient:
    """JSON-RPC over HTTP to one A2A endpoint, through the one HTTP exchange (`transport`:
    decoded replies, a size bound on the decoded bytes, one deadline per call). The token goes
    only in the Authorization header; errors name what failed, never the token."""

    MAX_REPLY_BYTES = 4 * 1024 * 1024

    def __init__(self, url: str, token: str | None, timeout: float):
        self.url = url
        self.timeout = timeout
        self.auth = BearerAuth(token)
        self.session = new_session()

    def close(self) -> None:
        self.session.close()

    def send_message(self, text: str, context: str, message_id: str) -> A2AReply:
        return self._call(
            "SendMessage",
            {
                "message": {
                    "messageId": message_id,
                    "contextId": context,
                    "role": "ROLE_USER",
                    "parts": [{"text": text}],
                },
                "configuration": {"returnImmediately": True},
            },
        )

    def get_task(self, task_id: str) -> A2AReply:
        return self._call("GetTask", {"id": task_id})

    def _call(self, method: str, params: dict[str, Any]) -> A2AReply:
        body = json.dumps({"jsonrpc": "2.0", "id": uuid.uuid4().hex, "method": method, "params": params})
        headers = {
            "content-type": "application/json",
            "accept": "application/json",
            # A fresh connection per request: a kept-alive one the server has closed fails the
            # next POST in a way that looks like "maybe sent", which would waste the one resend.
            "connection": "close",
        }
        try:
            reply = exchange(
                self.session,
                "POST",
                self.url,
                headers=headers,
                body=body.encode(),
                auth=self.auth,
                verify=None,
                timeouts=(min(5.0, self.timeout), self.timeout),
                give_up_at=time.monotonic() + self.timeout,
                max_bytes=self.MAX_REPLY_BYTES,
                peer=A2A_PEER,
            )
        except TransportError as exc:
            return A2AReply("maybe_sent" if exc.sent else "not_sent", exc.reason)
        except BodyTooLarge:
            return A2AReply("maybe_sent", f"the reply is over {self.MAX_REPLY_BYTES} bytes")
        except UndecodableBody as exc:
            return A2AReply("maybe_sent", f"the reply cannot be decoded: {exc.why}")
        except DeadlinePassed:
            return A2AReply("maybe_sent", f"no complete reply within {self.timeout:g} s")
        finally:
            # The header alone does not stop `requests` from pooling the connection when the
            # server's reply does not say `connection: close` too: drop it here.
            self.session.close()
        return read_reply(reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.body)
