"""HTTP front of the local hub: the AgentCom poll-model contract, quirks included.

Standard library only (`http.server`): the hub is a test and demo server, and it must behave
like the real one on the wire (docs/protocol.md), not be fast. Stricter than the real hub in
two opt-out-free ways: a body nested deeper than `schema.MAX_DEPTH` is refused (422), and with
an admin token set, only that token mints tokens.
"""

from __future__ import annotations

import gzip
import hmac
import io
import re
import signal
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any
from urllib.parse import parse_qs, unquote, urlsplit

from .groups import HubGroups, http_route
from .limits import RateLimiter, hub_limiter
from .schema import Answered, parse_json, validate_http, wire_json
from .store import HubStore, is_broadcast
from .ws import Presence, SocketContext, serve_socket, upgrade

MAX_BODY_BYTES = 8_000_000  # the real hub's (its parser's default)
MAX_CHUNK_LINE = 1024  # a chunk-size line with extensions; longer is not a client we serve
MAX_TRAILERS = 64
HTTP_READ_TIMEOUT_S = 60.0  # Bandit's read timeout: an idle connection, or a request not read whole by then, is dropped
WS_IDENTIFY_TIMEOUT_S = 60.0  # the real hub's WebSocket timeout, which also ends a socket that never identified
JSON_TYPE = "application/json; charset=utf-8"
REASONS = {422: "Unprocessable Content"}  # Bandit's reason phrases where Python's differ (RFC 9110's)
_HEX = re.compile(rb"^[0-9A-Fa-f]+$")


@dataclass(frozen=True)
class HubOptions:
    """How the hub behaves; the defaults are the real hub's."""

    rate_limits: bool = True
    message_rate: float = 1.0  # messages a second per sender, once the burst is spent
    message_burst: float = 60
    ws_idle_timeout: float = 60.0
    http_read_timeout: float = HTTP_READ_TIMEOUT_S
    ws_identify_timeout: float = WS_IDENTIFY_TIMEOUT_S
    ws_answer_pings: bool = True  # off only to let tests play a half-dead connection
    admin_token: str | None = field(default=None, repr=False)  # when set, only it may mint tokens


class HubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The real hub's listen backlog. With socketserver's default of 5, a burst of parallel
    # clients overflows it and their SYNs are dropped, each retried a second later.
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        store: HubStore,
        options: HubOptions | None = None,
        log: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(address, HubRequestHandler)
        self.store = store
        self.options = options or HubOptions()
        self.presence = Presence()
        self.groups = HubGroups(store, self.presence)
        self.limiter: RateLimiter | None = None
        if self.options.rate_limits:
            self.limiter = hub_limiter(self.options.message_rate, self.options.message_burst, clock)
        self.log = log if log is not None else sys.stderr
        self._log_lock = threading.Lock()

    def log_line(self, text: str) -> None:
        """One line to the log; request paths and agent ids come from anyone, so nothing
        in them reaches the log's terminal raw."""
        line = text[:500].encode("ascii", "backslashreplace").decode()
        line = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in line)
        try:
            with self._log_lock:
                print(line, file=self.log, flush=True)
        except (OSError, ValueError):
            pass

    def socket_context(self) -> SocketContext:
        return SocketContext(
            agent_for_token=self.store.agent_for_token,
            deliver=self.deliver,
            presence=self.presence,
            idle_timeout=self.options.ws_idle_timeout,
            identify_timeout=self.options.ws_identify_timeout,
            log=self.log_line,
            limiter=self.limiter,
            answer_pings=self.options.ws_answer_pings,
            groups=self.groups,
        )

    def deliver(self, sender: str, to: str | None, type_: str, payload: dict[str, Any], reply_to: str | None) -> str:
        """Route one message as the real hub does: a direct message to the recipient's first
        open socket, else its mailbox; a broadcast to every open socket (the sender's too) and
        to the mailbox of every other token holder whose messages nothing takes directly."""
        first, sockets = self.presence.routes()
        if is_broadcast(to):
            pushed, skip = sockets, set(first)
        else:
            assert to is not None
            pushed, skip = ([first[to]], {to}) if to in first else ([], set())
        now = int(self.store.clock() * 1000)
        msg_id = self.store.post(sender, to, type_, payload, reply_to, skip=skip, now=now)
        frame = {
            "type": "message",
            "id": msg_id,
            "from": sender,
            "message_type": type_,
            "payload": payload,
            "reply_to": reply_to,
            "timestamp": now,
        }
        for peer in pushed:
            peer.send(frame)  # a dead socket loses it, as on the real hub
        return msg_id

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}" if isinstance(host, str) else f"http://{host.decode()}:{port}"


class RequestReader(io.RawIOBase):
    """The connection's bytes for http.server, with a deadline for each request: a connection
    may wait `timeout` s for a request to begin, and the request (line, headers, body) must
    then be complete within `timeout` s of its first byte. A socket timeout alone is reset by
    every byte, so a client dripping one byte a minute (slowloris) would hold its thread for
    good (issue 27.10)."""

    def __init__(self, sock: socket.socket, timeout: float, clock: Callable[[], float] = time.monotonic):
        self.sock = sock
        self.timeout = timeout
        self.clock = clock
        self.deadline: float | None = None  # None: waiting for a request's first byte

    def readable(self) -> bool:
        return True

    def next_request(self) -> None:
        self.deadline = None

    def readinto(self, buffer: Any) -> int:
        wait = self.timeout
        if self.deadline is not None:
            wait = self.deadline - self.clock()
            if wait <= 0:
                raise TimeoutError("the request was not complete within the read timeout")
        self.sock.settimeout(wait)
        try:
            n = self.sock.recv_into(buffer)
        finally:
            self.sock.settimeout(self.timeout)  # writes keep the whole timeout
        if self.deadline is None and n:
            self.deadline = self.clock() + self.timeout
        return n


class _Refused(Exception):
    """A request body the hub will not read; the connection is closed after the answer."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class HubRequestHandler(BaseHTTPRequestHandler):
    server: HubServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY the body waits for
    # the client's delayed ACK (about 40 ms a reply on Linux).
    disable_nagle_algorithm = True
    timeout = HTTP_READ_TIMEOUT_S
    _started = 0.0
    _body_unread = False

    # plumbing -----------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        timeout = self.server.options.http_read_timeout
        self.connection.settimeout(timeout)
        self.reader = RequestReader(self.connection, timeout)
        self.rfile = io.BufferedReader(self.reader)

    def handle_one_request(self) -> None:
        self.reader.next_request()
        super().handle_one_request()

    def send_response(self, code: int, message: str | None = None) -> None:
        """The status line and the date, as Bandit sends them: no `server` header."""
        self.send_response_only(code, REASONS.get(code, message))
        self.send_header("date", self.date_time_string())

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        pass  # one line per request is written by _respond, without the query string

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a bad request line, headers too long): a status line,
        an empty body, and the connection closed, never an HTML page without a status line."""
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.1"
        self._started = self._started or time.monotonic()
        self._respond(code, close=True)

    def _log(self, status: int) -> None:
        ms = (time.monotonic() - self._started) * 1000
        path = urlsplit(getattr(self, "path", "") or "").path  # never the query: it may carry ?token=
        self.server.log_line(f"{getattr(self, 'command', None) or '-'} {path[:300]} {status} {ms:.1f}ms")

    def _respond(
        self, status: int, body: Any = None, headers: dict[str, str] | None = None, close: bool = False
    ) -> None:
        data = b"" if body is None else wire_json(body).encode()
        close = close or self._body_unread  # what is left of the body would be read as the next request
        self._log(status)  # before the reply: whoever got the reply finds its line in the log
        if body is None and status >= 400:
            # Refused by the real hub's web server (Bandit) before its router ran: a status
            # line and `connection: close`, nothing else; the connection is closed.
            self.send_response_only(status, REASONS.get(status))
            self.send_header("connection", "close")
            self.close_connection = True
            self.end_headers()
            return
        # As Bandit does: every reply but a 204 varies by accept-encoding, and a non-empty
        # body is compressed when the request accepts it; Plug adds its cache-control.
        coding = content_coding(self.headers.get("accept-encoding")) if data and status != 204 else None
        if coding is not None:
            data = compress(data, coding)
        self.send_response(status)
        self.send_header("content-length", str(len(data)))
        if status != 204:
            self.send_header("vary", "accept-encoding")
        self.send_header("cache-control", "max-age=0, private, must-revalidate")
        if body is not None:
            self.send_header("content-type", JSON_TYPE)
        if coding is not None:
            self.send_header("content-encoding", coding)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _bearer_token(self) -> str | None:
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        query = parse_qs(urlsplit(self.path).query)
        if self.command == "GET" and query.get("token"):
            return query["token"][0]
        return None

    def _bearer_agent(self) -> str | None:
        token = self._bearer_token()
        return self.server.store.agent_for_token(token) if token else None

    def _read_body(self) -> bytes:
        """The request body, sent with a declared length or chunked (raises _Refused)."""
        coding = self.headers.get("transfer-encoding")
        lengths = self.headers.get_all("content-length") or []
        if coding is not None:
            if lengths:  # both: a smuggling attempt or a broken client, never guessed at
                raise _Refused(HTTPStatus.BAD_REQUEST)
            if coding.strip().lower() != "chunked":
                raise _Refused(HTTPStatus.NOT_IMPLEMENTED)
            body = self._read_chunked()
        else:
            if len(set(lengths)) > 1 or (lengths and not lengths[0].strip().isdigit()):
                raise _Refused(HTTPStatus.BAD_REQUEST)  # a negative or nonsense length would block on read
            length = int(lengths[0]) if lengths else 0
            if length > MAX_BODY_BYTES:
                raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            body = self.rfile.read(length) if length else b""
            if len(body) < length:
                raise ConnectionError("the client went away mid-body")
        self._body_unread = False
        return body

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while size := self._chunk_size():
            if len(body) + size > MAX_BODY_BYTES:
                raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise ConnectionError("the client went away mid-chunk")
            body += chunk
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise _Refused(HTTPStatus.BAD_REQUEST)
        for _ in range(MAX_TRAILERS + 1):  # trailer fields, then the empty line
            if self._line(65536) in (b"\r\n", b"\n"):
                return bytes(body)
        raise _Refused(HTTPStatus.BAD_REQUEST)

    def _chunk_size(self) -> int:
        """The size on a chunk-size line (extensions after `;` ignored); 0 ends the body."""
        size_text = self._line(MAX_CHUNK_LINE).split(b";", 1)[0].strip()
        if not _HEX.fullmatch(size_text):
            raise _Refused(HTTPStatus.BAD_REQUEST)
        return int(size_text, 16)

    def _line(self, limit: int) -> bytes:
        """One line of the request, at most `limit` bytes before its end."""
        line = self.rfile.readline(limit + 1)
        if not line:
            raise ConnectionError("the client went away")
        if not line.endswith(b"\n"):
            raise _Refused(HTTPStatus.BAD_REQUEST)
        return line

    def _json_body(self) -> Any:
        """The request's JSON body (or schema.TOO_DEEP), or Answered after answering 400/413/415/501.
        As on the real hub, a body without a content type is not parsed (it counts as `{}`)."""
        try:
            raw = self._read_body()
        except _Refused as refused:
            self._respond(refused.status, close=True)
            return Answered
        ctype = self.headers.get("content-type")
        if ctype is None:
            return {}
        if ctype.split(";")[0].strip().lower() != "application/json":
            self._respond(HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
            return Answered
        if not raw.strip():
            return {}
        try:
            return parse_json(raw)
        except ValueError:
            self._respond(HTTPStatus.BAD_REQUEST)
            return Answered

    def _rate_limited(self, key: tuple[str, ...], tier: str) -> bool:
        """True after answering 429 with the real hub's headers and body."""
        limiter = self.server.limiter
        if limiter is None:
            return False
        verdict = limiter.check(key, tier)
        if verdict.allowed:
            return False
        body, headers = limiter.refusal(verdict)
        self._respond(429, body, headers=headers)
        return True

    def _invalid(self, schema_name: str, body: Any) -> bool:
        """True after answering 422 with the real hub's validation errors."""
        errors = validate_http(schema_name, body)
        if errors:
            self._respond(422, {"error": "validation_failed", "errors": errors})
        return bool(errors)

    def _route(self) -> Callable[[], None] | None:
        path = urlsplit(self.path).path
        parts = [unquote(p) for p in path.strip("/").split("/")]
        routes = {
            ("GET", "health"): self.health,
            ("GET", "ws"): self.websocket,
            ("GET", "api/agents"): self.agents,
            ("POST", "api/message"): self.post_message,
            ("GET", "api/messages"): self.message_history,
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
        if len(parts) == 5 and parts[:3] == ["api", "admin", "agents"] and parts[4] == "reset-token":
            return (lambda: self.reset_token(parts[3])) if self.command == "POST" else None
        return http_route(self, self.server.groups, self.command, parts)

    def _dispatch(self) -> None:
        self._started = time.monotonic()
        declared = self.headers.get("content-length", "0").strip()
        self._body_unread = "transfer-encoding" in self.headers or declared != "0"
        if self.request_version == "HTTP/0.9":  # no client of ours speaks it; it has no status line to answer with
            self.send_error(HTTPStatus.BAD_REQUEST)
            return
        handler = self._route()
        if handler is None:
            self._respond(HTTPStatus.NOT_FOUND, {"error": "not_found"})
            return
        try:
            handler()
        except TimeoutError:  # a body not complete within the read timeout: 408, as Bandit answers
            try:
                self._respond(HTTPStatus.REQUEST_TIMEOUT, close=True)
            except OSError:
                self.close_connection = True
        except ConnectionError:
            self.close_connection = True  # the client went away: nothing to answer
        except Exception as exc:  # a bug in the hub must not kill the server thread silently
            self.server.log_line(f"internal error: {type(exc).__name__}: {exc}")
            self._respond(HTTPStatus.INTERNAL_SERVER_ERROR, close=True)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    # routes -------------------------------------------------------------

    def health(self) -> None:
        self._respond(200, {"status": "ok", "service": "agent_com", "agents_connected": self.server.presence.count()})

    def agents(self) -> None:
        """Agents connected by WebSocket, as the real hub lists them (it has no task state for
        them here, hence `fsm_state` "unknown")."""
        if self._rate_limited(("http", f"ip:{self.client_address[0]}"), "light"):
            return
        keys = ("agent_id", "name", "status", "capabilities", "connected_at")
        listed = [{**{k: a.get(k) for k in keys}, "fsm_state": "unknown"} for a in self.server.presence.listing()]
        self._respond(200, {"agents": listed})

    def websocket(self) -> None:
        self.close_connection = True
        connection = upgrade(self, MAX_BODY_BYTES)
        self._log(101 if connection is not None else 400)
        if connection is not None:
            serve_socket(connection, self.server.socket_context())

    def post_message(self) -> None:
        body = self._json_body()
        if body is Answered:
            return
        sender = self._bearer_agent()
        if sender is None:
            self._respond(401, {"error": "unauthorized", "hint": "provide Authorization: Bearer <token>"})
            return
        if self._rate_limited(("http", sender), "normal") or self._invalid("post_message", body):
            return
        type_ = body.get("type")
        msg_id = self.server.deliver(
            sender, body.get("to"), "chat" if type_ is None else type_, body["payload"], body.get("reply_to")
        )
        self._respond(200, {"status": "sent", "id": msg_id})

    def poll(self, agent_id: str) -> None:
        if self._bearer_agent() != agent_id:
            self._respond(401, {"error": "unauthorized"})
            return
        raw = parse_qs(urlsplit(self.path).query).get("since", ["0"])[0]
        try:
            since = int(raw)
        except ValueError:
            # The real hub crashes the request: 500, empty body, connection closed. Kept on
            # purpose (the one 500 a client's input gets here): a client must survive it there.
            self._respond(500, close=True)
            return
        messages = self.server.store.poll(agent_id, since)
        last_seq = messages[-1]["seq"] if messages else since
        self._respond(200, {"agent_id": agent_id, "messages": messages, "last_seq": last_seq, "count": len(messages)})

    def message_history(self) -> None:
        """`GET /api/messages`: what the hub routed, for any valid token, with the real hub's
        filters (from, to, start_time, end_time, cursor, limit)."""
        if self._bearer_agent() is None:
            self._respond(401, {"error": "unauthorized"})
            return
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        try:
            numbers = {k: int(query[k]) for k in ("start_time", "end_time", "cursor", "limit") if k in query}
        except ValueError:  # the real hub's String.to_integer crashes the request
            self._respond(500, close=True)
            return
        messages = self.server.store.history(
            sender=query.get("from"),
            to=query.get("to"),
            start_ms=numbers.get("start_time", 0),
            end_ms=numbers.get("end_time"),
            cursor=numbers.get("cursor", 0),
            limit=numbers.get("limit", 50),
        )
        cursor = messages[-1]["seq"] if messages else numbers.get("cursor", 0)
        self._respond(200, {"messages": messages, "cursor": cursor, "count": len(messages)})

    def ack(self, agent_id: str) -> None:
        body = self._json_body()
        if body is Answered:
            return
        if self._bearer_agent() != agent_id:
            self._respond(401, {"error": "unauthorized"})
            return
        if self._invalid("post_mailbox_ack", body):
            return
        self.server.store.ack(agent_id, body["seq"])
        self._respond(200, {"status": "acked", "up_to": body["seq"]})

    def register(self) -> None:
        body = self._json_body()
        if body is Answered or self._rate_limited(("http", f"ip:{self.client_address[0]}"), "heavy"):
            return
        if self._invalid("post_onboard_register", body) or self._empty_agent_id(body):
            return
        token = self.server.store.register(body["agent_id"])
        if token is None:
            self._respond(409, {"error": "agent_id already registered"})
            return
        base = self.server.base_url
        self._respond(
            201,
            {
                "agent_id": body["agent_id"],
                "token": token,
                "hub_api_url": base,
                "hub_ws_url": base.replace("http://", "ws://", 1) + "/ws",
                "default_repo": None,
            },
        )

    def admin_tokens(self) -> None:
        body = self._json_body()
        if body is Answered or not self._admin_allowed():
            return
        if self._invalid("post_admin_token", body) or self._empty_agent_id(body):
            return
        self._respond(201, {"agent_id": body["agent_id"], "token": self.server.store.mint_token(body["agent_id"])})

    def reset_token(self, agent_id: str) -> None:
        """`POST /api/admin/agents/<id>/reset-token`: every token of the agent revoked, a new one minted."""
        if not self._admin_allowed():
            return
        token = self.server.store.reset_token(agent_id)
        if token is None:
            self._respond(404, {"error": "agent_not_found", "agent_id": agent_id})
            return
        self._respond(201, {"agent_id": agent_id, "token": token, "hint": "give the agent its new token"})

    def _admin_allowed(self) -> bool:
        """Whether the bearer may use the admin routes (any valid token, as on the real hub, or
        only the admin token when the hub has one); False after answering 401 or 403."""
        token = self._bearer_token()
        admin = self.server.options.admin_token
        if admin is None:
            allowed = token is not None and self.server.store.agent_for_token(token) is not None
        else:
            allowed = token is not None and hmac.compare_digest(token.encode(), admin.encode())
            if not allowed and token is not None and self.server.store.agent_for_token(token) is not None:
                self._respond(403, {"error": "admin_only", "message": "this hub mints tokens only for its admin token"})
                return False
        if not allowed:
            self._respond(401, {"error": "unauthorized"})
        return allowed

    def _empty_agent_id(self, body: dict[str, Any]) -> bool:
        if body["agent_id"].strip():
            return False
        self._respond(
            422,
            {
                "error": "validation_failed",
                "errors": [{"field": "agent_id", "error": "required", "detail": "field is required"}],
            },
        )
        return True


RESPONSE_CODINGS = ("gzip", "x-gzip", "deflate")  # Bandit's order of preference (no zstd before OTP 28)


def content_coding(accept_encoding: str | None) -> str | None:
    """The coding the real hub's Bandit picks for an Accept-Encoding header: the first of
    its own preference the client accepts (q > 0, or a `*` with q > 0), else none."""
    if not accept_encoding:
        return None
    accepted: dict[str, float] = {}
    for element in accept_encoding.split(","):
        coding, *params = element.split(";")
        q = 1.0
        for param in params:
            name, _, value = param.strip().lower().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 1.0  # lenient, as Bandit is: a client that lists a coding accepts it
        accepted.setdefault(coding.strip().lower(), q)
    wildcard = accepted.get("*")
    for coding in RESPONSE_CODINGS:
        weight = accepted.get(coding, wildcard)
        if weight is not None and weight > 0:
            return coding
    return None


def compress(data: bytes, coding: str) -> bytes:
    if coding == "deflate":
        return zlib.compress(data)
    return gzip.compress(data, mtime=0)


def serve(
    host: str,
    port: int,
    store: HubStore,
    options: HubOptions | None = None,
    on_start: Callable[[str], None] | None = None,
) -> None:
    """Run the hub until SIGINT or SIGTERM; `on_start` gets the URL once it listens."""
    server = HubServer((host, port), store, options)

    def stop(signum: int, frame: Any) -> None:  # raise out of serve_forever's select in the main thread
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
        server.groups.close()
        store.close()
        print("agentcom hub stopped", file=sys.stderr, flush=True)


__all__ = ["HubOptions", "HubServer", "serve", "is_broadcast"]
