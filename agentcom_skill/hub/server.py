"""HTTP front of the local hub: the AgentCom poll-model contract, quirks included.

Standard library only (`http.server`): the hub is a test and demo server, and it
must behave like the real one on the wire, not be fast.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from .store import HubStore, is_broadcast

MAX_BODY_BYTES = 8 * 1024 * 1024


class RateLimiter:
    """Token bucket per key: `rate` requests per second, bursts of `burst` (default `rate`)."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.clock = clock  # injected by tests
        self.rate = rate
        # At least one request must fit the bucket, or a rate below 1/s refuses everything.
        self.burst = max(1.0, burst if burst is not None else rate)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take one token; returns 0 on success, else seconds until one is free."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate


class HubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], store: HubStore, rate_limit: float | None = None, log=None, ws_idle_timeout: float = 60.0, ws_answer_pings: bool = True):
        super().__init__(address, HubRequestHandler)
        from .ws import Presence

        self.store = store
        self.presence = Presence()
        self.ws_idle_timeout = ws_idle_timeout
        self.ws_answer_pings = ws_answer_pings
        self.limiter = RateLimiter(rate_limit) if rate_limit else None
        # With rate limiting on, registration is limited like the real hub's: 10 a minute per IP.
        self.register_limiter = RateLimiter(10 / 60, burst=10) if rate_limit else None
        self.log = log if log is not None else sys.stderr

    def log_line(self, text: str) -> None:
        """One line to the log; request paths and agent ids come from anyone, so nothing
        in them reaches the log's terminal raw."""
        line = text[:500].encode("ascii", "backslashreplace").decode()
        line = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in line)
        try:
            print(line, file=self.log, flush=True)
        except (OSError, ValueError):
            pass

    def deliver(self, sender: str, to: str | None, type_: str, payload: dict[str, Any], reply_to: str | None) -> str:
        """Route one message: pushed to connected recipients, stored for the others."""
        connected = self.presence.peers()
        if is_broadcast(to):
            pushed = {a: p for a, p in connected.items() if a != sender}
        else:
            pushed = {to: connected[to]} if to in connected else {}
        msg_id = self.store.post(sender, to, type_, payload, reply_to, skip=set(pushed))
        frame = {"type": "message", "id": msg_id, "from": sender, "message_type": type_, "payload": payload,
                 "reply_to": reply_to, "timestamp": int(time.time() * 1000)}
        for peer in pushed.values():
            peer.send(frame)  # a dead socket loses it, as on the real hub
        return msg_id

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class HubRequestHandler(BaseHTTPRequestHandler):
    server: HubServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY the body waits for
    # the client's delayed ACK (about 40 ms a reply on Linux).
    disable_nagle_algorithm = True
    server_version = "agentcom-hub"
    sys_version = ""

    # plumbing -----------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        pass  # one line per request is written by _respond, without the query string

    def _log(self, status: int) -> None:
        ms = (time.monotonic() - self._started) * 1000
        path = urlsplit(self.path).path  # never the query: it may carry ?token=
        self.server.log_line(f"{self.command} {path[:300]} {status} {ms:.1f}ms")

    def _respond(self, status: int, body: Any = None, headers: dict[str, str] | None = None, close: bool = False) -> None:
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)
        self._log(status)

    def _bearer_agent(self) -> str | None:
        header = self.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return self.server.store.agent_for_token(token.strip())
        query = parse_qs(urlsplit(self.path).query)
        if self.command == "GET" and query.get("token"):
            return self.server.store.agent_for_token(query["token"][0])
        return None

    def _json_body(self) -> Any:
        """The request's JSON body, or _Answered after answering 400/413/415 itself."""
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if length < 0:  # a negative or nonsense length would block the handler on read
            self._respond(HTTPStatus.BAD_REQUEST, close=True)
            return _Answered
        if length > MAX_BODY_BYTES:
            self._respond(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, close=True)
            return _Answered
        raw = self.rfile.read(length) if length else b""
        ctype = self.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            self._respond(HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
            return _Answered
        try:
            return json.loads(raw)
        except ValueError:
            self._respond(HTTPStatus.BAD_REQUEST)
            return _Answered

    def _rate_limited(self, limiter: RateLimiter | None, key: str) -> bool:
        """True after answering 429 with the real hub's headers and body."""
        wait = limiter.acquire(key) if limiter is not None else 0.0
        if wait:
            self._respond(
                429,
                {"error": "rate_limited", "retry_after_ms": math.ceil(wait * 1000), "tier": "normal"},
                headers={"retry-after": str(max(1, math.ceil(wait)))},
            )
        return bool(wait)

    def _agent_id_field(self, body: Any) -> str | None:
        """`agent_id` of a register or token request, or None after answering 422."""
        agent_id = body.get("agent_id") if isinstance(body, dict) else None
        if isinstance(agent_id, str) and agent_id.strip():
            return agent_id
        self._respond(422, {"error": "validation_failed", "errors": [{"field": "agent_id", "error": "required", "detail": "agent_id must be a non-empty string"}]})
        return None

    def _route(self) -> Callable[..., None] | None:
        path = urlsplit(self.path).path
        parts = [unquote(p) for p in path.strip("/").split("/")]
        routes = {
            ("GET", "health"): self.health,
            ("GET", "ws"): self.websocket,
            ("GET", "api/agents"): self.agents,
            ("POST", "api/message"): self.post_message,
            ("POST", "api/onboard/register"): self.register,
            ("POST", "admin/tokens"): self.admin_tokens,
        }
        handler = routes.get((self.command, "/".join(parts)))
        if handler:
            return handler
        if len(parts) == 3 and parts[:2] == ["api", "mailbox"] and self.command == "GET":
            return lambda: self.poll(parts[2])
        if len(parts) == 4 and parts[:2] == ["api", "mailbox"] and parts[3] == "ack" and self.command == "POST":
            return lambda: self.ack(parts[2])
        return None

    def _dispatch(self) -> None:
        self._started = time.monotonic()
        handler = self._route()
        if handler is None:
            self._respond(HTTPStatus.NOT_FOUND, {"error": "not_found"})
            return
        try:
            handler()
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away: nothing to answer
        except Exception as exc:  # a bug in the hub must not kill the server thread silently
            print(f"internal error: {type(exc).__name__}: {exc}", file=self.server.log, flush=True)
            self._respond(HTTPStatus.INTERNAL_SERVER_ERROR, close=True)

    do_GET = _dispatch
    do_POST = _dispatch

    # routes -------------------------------------------------------------

    def health(self) -> None:
        self._respond(200, {"status": "ok", "service": "agent_com", "agents_connected": self.server.presence.count()})

    def agents(self) -> None:
        """Agents connected by WebSocket, as the real hub lists them."""
        listed = [{k: a[k] for k in ("agent_id", "name", "status", "capabilities", "connected_at", "fsm_state")} for a in self.server.presence.list()]
        self._respond(200, {"agents": listed})

    def websocket(self) -> None:
        from .ws import serve_socket, upgrade

        self.close_connection = True
        connection = upgrade(self)
        self._log(101 if connection is not None else 400)
        if connection is None:
            return
        serve_socket(
            connection,
            agent_for_token=self.server.store.agent_for_token,
            deliver=self.server.deliver,
            presence=self.server.presence,
            idle_timeout=self.server.ws_idle_timeout,
            log=self.server.log_line,
            answer_pings=self.server.ws_answer_pings,
        )

    def post_message(self) -> None:
        sender = self._bearer_agent()
        body = self._json_body()
        if body is _Answered:
            return
        if sender is None:
            self._respond(401, {"error": "unauthorized", "hint": "send Authorization: Bearer <token>"})
            return
        errors = _validate_message(body)
        if errors:
            self._respond(422, {"error": "validation_failed", "errors": errors})
            return
        if self._rate_limited(self.server.limiter, sender):
            return
        msg_id = self.server.deliver(sender, body.get("to"), body.get("type") or "chat", body["payload"], body.get("reply_to"))
        self._respond(200, {"status": "sent", "id": msg_id})

    def poll(self, agent_id: str) -> None:
        if self._bearer_agent() != agent_id:
            self._respond(401, {"error": "unauthorized"})
            return
        raw = parse_qs(urlsplit(self.path).query).get("since", ["0"])[0]
        try:
            since = int(raw)
        except ValueError:
            # The real hub crashes the request: 500, empty body, connection closed.
            self._respond(500, close=True)
            return
        messages = self.server.store.poll(agent_id, since)
        last_seq = messages[-1]["seq"] if messages else since
        self._respond(200, {"agent_id": agent_id, "messages": messages, "last_seq": last_seq, "count": len(messages)})

    def ack(self, agent_id: str) -> None:
        owner = self._bearer_agent()
        body = self._json_body()
        if body is _Answered:
            return
        if owner != agent_id:
            self._respond(401, {"error": "unauthorized"})
            return
        seq = body.get("seq") if isinstance(body, dict) else None
        if not _is_int(seq):
            self._respond(
                422,
                {"error": "validation_failed", "errors": [{"field": "seq", "error": "must be an integer", "detail": "seq is required", **({"value": seq} if seq is not None else {})}]},
            )
            return
        self.server.store.ack(agent_id, seq)
        self._respond(200, {"status": "acked", "up_to": seq})

    def register(self) -> None:
        body = self._json_body()
        if body is _Answered or self._rate_limited(self.server.register_limiter, self.client_address[0]):
            return
        agent_id = self._agent_id_field(body)
        if agent_id is None:
            return
        token = self.server.store.register(agent_id)
        if token is None:
            self._respond(409, {"error": "agent_id already registered"})
            return
        base = self.server.base_url
        self._respond(
            201,
            {
                "agent_id": agent_id,
                "token": token,
                "hub_api_url": base,
                "hub_ws_url": base.replace("http://", "ws://", 1) + "/ws",
                "default_repo": None,
            },
        )

    def admin_tokens(self) -> None:
        caller = self._bearer_agent()
        body = self._json_body()
        if body is _Answered:
            return
        if caller is None:
            self._respond(401, {"error": "unauthorized"})
            return
        agent_id = self._agent_id_field(body)
        if agent_id is None:
            return
        self._respond(201, {"agent_id": agent_id, "token": self.server.store.mint_token(agent_id)})


class _Answered:
    """Marker: the request was already answered with an error."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_message(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return [{"field": "body", "error": "must be an object", "detail": "the request body must be a JSON object"}]
    errors = []
    if "payload" not in body:
        errors.append({"field": "payload", "error": "required", "detail": "payload is required"})
    elif not isinstance(body["payload"], dict):
        errors.append({"field": "payload", "error": "must be an object", "detail": "payload must be a JSON object", "value": body["payload"]})
    for field in ("to", "type", "reply_to"):
        value = body.get(field)
        if value is not None and (not isinstance(value, str) or not value):
            errors.append({"field": field, "error": "must be a non-empty string", "detail": f"{field} must be a string", "value": value})
    return errors


def serve(host: str, port: int, store: HubStore, rate_limit: float | None = None, on_start: Callable[[str], None] | None = None,
          ws_idle_timeout: float = 60.0, ws_answer_pings: bool = True) -> None:
    """Run the hub until SIGINT or SIGTERM; `on_start` gets the URL once it listens."""
    server = HubServer((host, port), store, rate_limit, ws_idle_timeout=ws_idle_timeout, ws_answer_pings=ws_answer_pings)

    def stop(signum, frame):  # raise out of serve_forever's select in the main thread
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    if on_start is not None:
        on_start(server.base_url)
    else:
        print(f"agentcom hub listening on {server.base_url} (db {store.path})", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        store.close()
        print("agentcom hub stopped", file=sys.stderr, flush=True)


__all__ = ["HubServer", "serve", "is_broadcast"]
