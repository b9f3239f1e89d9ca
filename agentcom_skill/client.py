"""HubClient: the hub's HTTP contract, its errors and our retry policy, in one place.

Every reply is validated here before anything else sees it. The token travels only in
the Authorization header and appears in no log line or error message.

The wire is a `Transport`: the default speaks HTTP/1.1 through the standard library's
`http.client` (one kept-alive connection per client, which is all a CLI run needs, and
about 70 ms less start-up than a general HTTP library); a test can pass another.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from .errors import AuthError, ConfigError, HubProtocolError, HubUnavailableError, RateLimitedError, UsageError
from .message import MailboxBatch, parse_mailbox_bytes

log = logging.getLogger("agentcom.http")

RETRY_STATUSES = frozenset({502, 503, 504})


# the wire ----------------------------------------------------------------------------


class TransportError(Exception):
    """The exchange failed below HTTP. `sent` is False when the request cannot have reached
    the hub (safe to retry any call); `hopeless` when retrying cannot help."""

    def __init__(self, reason: str, *, sent: bool, hopeless: bool = False):
        super().__init__(reason)
        self.reason, self.sent, self.hopeless = reason, sent, hopeless


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class Transport(Protocol):
    def request(self, method: str, path: str, headers: dict[str, str], body: bytes | None,
                timeouts: tuple[float, float], give_up_at: float, max_bytes: int) -> Reply: ...

    def close(self) -> None: ...


class BodyTooLarge(Exception):
    def __init__(self, size: int | None):
        self.size = size


class DeadlinePassed(Exception):
    pass


class HttpTransport:
    """HTTP/1.1 over one kept-alive `http.client` connection."""

    def __init__(self, base_url: str):
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self._conn: Any = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self, connect_timeout: float) -> Any:
        import http.client

        if self.https:
            import ssl

            conn = http.client.HTTPSConnection(self.host, self.port, timeout=connect_timeout, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=connect_timeout)
        try:
            conn.connect()
        except socket.gaierror:
            raise TransportError("the host name does not resolve (check hub_url)", sent=False, hopeless=True) from None
        except ConnectionRefusedError:
            raise TransportError("connection refused (is the hub running, the port right?)", sent=False) from None
        except TimeoutError:
            raise TransportError("connection timed out (is the host reachable, the port right?)", sent=False) from None
        except OSError as exc:
            if _is_tls_error(exc):
                raise TransportError("TLS handshake failed (is the hub plain http? then use an http:// hub_url)", sent=False, hopeless=True) from None
            raise TransportError(f"cannot connect ({exc.strerror or type(exc).__name__})", sent=False) from None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def request(self, method, path, headers, body, timeouts, give_up_at, max_bytes) -> Reply:
        import http.client

        reused = self._conn is not None
        if self._conn is None:
            self._conn = self._connect(timeouts[0])
        conn = self._conn
        try:
            conn.sock.settimeout(timeouts[1])
            conn.request(method, self.prefix + path, body=body, headers={**headers, "user-agent": "agentcom"})
            resp = conn.getresponse()
            status, reply_headers = resp.status, {k.lower(): v for k, v in resp.getheaders()}
            declared = reply_headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise BodyTooLarge(int(declared))
            chunks, size = [], 0
            while True:
                # read1: whatever one socket read brings, so a hub dripping its reply
                # byte by byte still meets the overall deadline.
                chunk = resp.read1(256 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise BodyTooLarge(None)
                chunks.append(chunk)
                if time.monotonic() > give_up_at:
                    raise DeadlinePassed()
            resp.close()  # read to the end: the connection is ready for the next request
            if resp.will_close:
                self.close()
            return Reply(status, reply_headers, b"".join(chunks))
        except (BodyTooLarge, DeadlinePassed):
            self.close()
            raise
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
            self.close()
            if reused:  # the hub closed an idle kept-alive connection: once more on a new one
                return self.request(method, path, headers, body, timeouts, give_up_at, max_bytes)
            hint = "" if self.https else " (if the hub serves https, use an https:// hub_url)"
            raise TransportError(f"connection reset or closed by the hub{hint}", sent=True) from exc
        except TimeoutError:
            self.close()
            raise TransportError("no reply in time (read timeout)", sent=True) from None
        except http.client.BadStatusLine:
            self.close()
            hint = " (an https hub? then use an https:// hub_url)" if not self.https else ""
            raise TransportError(f"the hub answered something that is not HTTP{hint}", sent=True, hopeless=True) from None
        except (http.client.HTTPException, OSError) as exc:
            self.close()
            if _is_tls_error(exc):
                raise TransportError("TLS error", sent=True, hopeless=True) from None
            raise TransportError(f"connection failed ({type(exc).__name__})", sent=True) from None


def _is_tls_error(exc: BaseException) -> bool:
    ssl = __import__("sys").modules.get("ssl")
    return ssl is not None and isinstance(exc, ssl.SSLError)


class HubClient:
    """A session with one hub, as one agent (its token)."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        deadline: float = 60.0,
        max_response_bytes: int = 64 * 1024 * 1024,
        retries: int = 3,
        backoff: float = 0.2,
        max_rate_limit_wait: float = 10.0,
        token_source: str = "",
        url_source: str = "",
        transport: Transport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.token_source = token_source
        self.url_source = url_source
        self.timeout = (connect_timeout, read_timeout)
        self.deadline = deadline  # seconds for one call, retries and waits included
        self.max_response_bytes = max_response_bytes
        self.retries = retries
        self.backoff = backoff
        self.max_rate_limit_wait = max_rate_limit_wait
        self.transport: Transport = transport if transport is not None else HttpTransport(self.base_url)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "HubClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the contract -------------------------------------------------------

    def health(self) -> dict[str, Any]:
        body = self._request("GET", "/health", auth=False)
        if not isinstance(body, dict):
            raise HubProtocolError("hub sent a /health reply that is not a JSON object")
        return body

    def agents(self) -> list[dict[str, Any]]:
        body = self._request("GET", "/api/agents", auth=False)
        agents = body.get("agents") if isinstance(body, dict) else None
        if not isinstance(agents, list) or not all(isinstance(a, dict) for a in agents):
            raise HubProtocolError("hub sent an /api/agents reply without an 'agents' list of objects")
        for a in agents:
            caps = a.get("capabilities")
            if not isinstance(a.get("agent_id"), str) or (caps is not None and not (isinstance(caps, list) and all(isinstance(c, str) for c in caps))):
                raise HubProtocolError("hub sent an /api/agents entry without a string agent_id or with capabilities that are not a list of strings")
            if a.get("status") is not None and not isinstance(a["status"], str):
                raise HubProtocolError("hub sent an /api/agents entry whose status is not a string")
        return agents

    def poll(self, agent_id: str, since: int = 0) -> MailboxBatch:
        # The body is parsed by message.py from its bytes: one entry too deep or otherwise
        # unreadable is set aside there, and must not fail the whole reply here.
        raw = self._request("GET", f"/api/mailbox/{quote(agent_id, safe='')}?since={int(since)}", raw=True)
        return parse_mailbox_bytes(raw, since)

    def ack(self, agent_id: str, seq: int) -> int:
        body = self._request("POST", f"/api/mailbox/{quote(agent_id, safe='')}/ack", json_body={"seq": int(seq)})
        up_to = body.get("up_to") if isinstance(body, dict) else None
        if not isinstance(up_to, int) or isinstance(up_to, bool):
            raise HubProtocolError("hub sent an ack reply without an integer 'up_to'")
        return up_to

    def send(self, to: str | None, type_: str | None, payload: dict[str, Any], reply_to: str | None = None) -> str:
        body: dict[str, Any] = {"payload": payload}
        if to is not None:
            body["to"] = to
        if type_ is not None:
            body["type"] = type_
        if reply_to is not None:
            body["reply_to"] = reply_to
        reply = self._request("POST", "/api/message", json_body=body, idempotent=False)
        msg_id = reply.get("id") if isinstance(reply, dict) else None
        if not isinstance(msg_id, str) or not msg_id:
            raise HubProtocolError("hub sent a message reply without a string 'id'")
        return msg_id

    def register(self, agent_id: str) -> dict[str, Any]:
        body = self._request("POST", "/api/onboard/register", json_body={"agent_id": agent_id}, auth=False, idempotent=False)
        if not isinstance(body, dict) or not isinstance(body.get("token"), str):
            raise HubProtocolError("hub sent a register reply without a 'token'")
        return body

    # plumbing -----------------------------------------------------------

    def _request(self, method: str, path: str, *, json_body: Any = None, auth: bool = True, idempotent: bool = True,
                 raw: bool = False) -> Any:
        """One call with retries; the decoded JSON body (or, with `raw`, a 2xx reply's bytes)."""
        headers = {"accept": "application/json"}
        if auth:
            headers["authorization"] = f"Bearer {self._token}"
        data = None
        if json_body is not None:
            data = json.dumps(json_body, separators=(",", ":")).encode()
            headers["content-type"] = "application/json"
        attempt, waited_for_limit, rate_limited = 0, 0.0, 0
        give_up_at = time.monotonic() + self.deadline
        while True:
            started = time.monotonic()
            left = give_up_at - started
            if left <= 0:
                raise HubUnavailableError(f"hub {self.base_url} gave no complete reply to {method} {_route(path)} within the {self.deadline:g} s deadline")
            timeouts = (min(self.timeout[0], left), min(self.timeout[1], left))
            try:
                reply = self.transport.request(method, path, headers, data, timeouts, give_up_at, self.max_response_bytes)
            except TransportError as exc:
                log.debug("%s %s failed: %s (%.1f ms)", method, _route(path), exc.reason, (time.monotonic() - started) * 1000)
                if (idempotent or not exc.sent) and not exc.hopeless and attempt < self.retries:
                    attempt += 1
                    self._sleep_backoff(attempt, give_up_at)
                    continue
                where = f" (hub_url from {self.url_source})" if self.url_source else ""
                raise HubUnavailableError(f"hub {self.base_url}{where} unreachable: {exc.reason}") from None
            except BodyTooLarge as exc:
                size = f"{exc.size} bytes, " if exc.size else ""
                raise HubProtocolError(f"hub reply to {method} {_route(path)} is {size}over the {self.max_response_bytes}-byte limit") from None
            except DeadlinePassed:
                raise HubUnavailableError(f"hub {self.base_url} did not finish its reply to {method} {_route(path)} within the {self.deadline:g} s deadline") from None
            status = reply.status
            log.debug("%s %s -> %d (%.1f ms)", method, path, status, (time.monotonic() - started) * 1000)
            if status == 429:
                # A retry-after of 0, negative or nonsense still waits a little, and the
                # number of tries is bounded: a hub answering 429 at once cannot spin us.
                wait = _retry_after(reply.headers.get("retry-after"))
                rate_limited += 1
                if rate_limited <= 5 and waited_for_limit + wait <= self.max_rate_limit_wait and time.monotonic() + wait < give_up_at:
                    waited_for_limit += wait
                    time.sleep(wait)
                    continue
                raise RateLimitedError(f"hub {self.base_url} is rate-limiting {method} {_route(path)}; retry after {wait:g} s")
            if status in RETRY_STATUSES and idempotent and attempt < self.retries:
                attempt += 1
                self._sleep_backoff(attempt, give_up_at)
                continue
            if raw and 200 <= status < 300:
                if not reply.body:
                    raise HubProtocolError(f"hub reply to {method} {_route(path)} is empty")
                return reply.body
            return self._decode(status, reply.body, method, path)

    def _sleep_backoff(self, attempt: int, give_up_at: float) -> None:
        # Exponential backoff with full jitter, so parallel clients do not retry in step.
        time.sleep(max(0.0, min(random.uniform(0, self.backoff * 2 ** (attempt - 1)), give_up_at - time.monotonic())))

    def _decode(self, status: int, raw: bytes, method: str, path: str) -> Any:
        body: Any = None
        if raw:
            try:
                body = json.loads(raw, parse_constant=_no_constant)
            except (ValueError, RecursionError):
                if 200 <= status < 300:
                    raise HubProtocolError(f"hub reply to {method} {_route(path)} is not JSON") from None
        if 200 <= status < 300:
            if body is None:
                raise HubProtocolError(f"hub reply to {method} {_route(path)} is empty")
            return body
        if status in (401, 403):
            where = f" from {self.token_source}" if self.token_source else ""
            raise AuthError(f"hub {self.base_url} refused the token{where} ({status}) for {method} {_route(path)}: check it belongs to this agent id at this hub")
        if status == 404 and path.startswith("/api/"):
            raise HubProtocolError(f"hub {self.base_url} has no {_route(path)} (404): check hub_url is the hub's base URL, without /api")
        if status == 409:
            raise ConfigError(f"hub refused {method} {_route(path)}: {self._scrub(_error_text(body)) or 'conflict'}")
        if status in (400, 413, 415, 422):
            raise UsageError(f"hub rejected {method} {_route(path)} ({status}): {self._scrub(_error_text(body)) or 'invalid request'}")
        if status >= 500:
            raise HubUnavailableError(f"hub {self.base_url} failed ({status}) on {method} {_route(path)}")
        raise HubProtocolError(f"hub answered {status} to {method} {_route(path)}")


    def _scrub(self, text: str) -> str:
        """Never repeat our own token, even when the hub echoes it back."""
        if self._token and self._token in text:
            text = text.replace(self._token, "****")
        return text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _route(path: str) -> str:
    return path.split("?", 1)[0]


def _retry_after(value: str | None) -> float:
    """Seconds to wait after a 429: the header clamped to 0.5 s .. 1 h; 1 s when missing or odd."""
    try:
        wait = float(value if value is not None else "1")
    except ValueError:
        return 1.0
    if wait != wait:  # NaN
        return 1.0
    return min(max(wait, 0.5), 3600.0)


def _error_text(body: Any) -> str:
    """A short, single-line summary of a hub error body."""
    if not isinstance(body, dict):
        return ""
    parts = []
    if isinstance(body.get("error"), str):
        parts.append(body["error"])
    for err in body.get("errors") or []:
        if isinstance(err, dict):
            field, detail = err.get("field"), err.get("detail") or err.get("error")
            parts.append(f"{field}: {detail}")
    text = "; ".join(str(p) for p in parts)
    return "".join(c if c.isprintable() else "?" for c in text)[:300]
