"""HubClient: the hub's HTTP contract, its errors and our retry policy, in one place.

Every reply is validated here before anything else sees it. The token travels only in
the Authorization header and appears in no log line or error message.
"""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any
from urllib.parse import quote

import requests

from .errors import AuthError, ConfigError, HubProtocolError, HubUnavailableError, RateLimitedError, UsageError
from .message import MailboxBatch, parse_mailbox

log = logging.getLogger("agentcom.http")

RETRY_STATUSES = frozenset({502, 503, 504})


def _connect_failed(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached the hub (safe to retry any call)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError) and exc.args:
        import urllib3.exceptions

        reason = getattr(exc.args[0], "reason", None)
        return isinstance(reason, urllib3.exceptions.NewConnectionError)
    return False


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
    ):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.token_source = token_source
        self.timeout = (connect_timeout, read_timeout)
        self.deadline = deadline  # seconds for one call, retries and waits included
        self.max_response_bytes = max_response_bytes
        self.retries = retries
        self.backoff = backoff
        self.max_rate_limit_wait = max_rate_limit_wait
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies or .netrc: the hub gets exactly our header
        self.session.headers["user-agent"] = "agentcom"

    def close(self) -> None:
        self.session.close()

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
        body = self._request("GET", f"/api/mailbox/{quote(agent_id, safe='')}?since={int(since)}")
        return parse_mailbox(body, since)

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

    def _request(self, method: str, path: str, *, json_body: Any = None, auth: bool = True, idempotent: bool = True) -> Any:
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
            timeout = (min(self.timeout[0], left), min(self.timeout[1], left))
            try:
                resp = self.session.request(method, self.base_url + path, data=data, headers=headers, timeout=timeout, stream=True)
            except requests.RequestException as exc:
                log.debug("%s %s failed: %s (%.1f ms)", method, path, type(exc).__name__, (time.monotonic() - started) * 1000)
                if (idempotent or _connect_failed(exc)) and attempt < self.retries and not _hopeless(exc):
                    attempt += 1
                    self._sleep_backoff(attempt, give_up_at)
                    continue
                raise HubUnavailableError(f"hub {self.base_url} unreachable: {_describe(exc, self.base_url)}") from None
            try:
                status = resp.status_code
                log.debug("%s %s -> %d (%.1f ms)", method, path, status, (time.monotonic() - started) * 1000)
                if status == 429:
                    # A retry-after of 0, negative or nonsense still waits a little, and the
                    # number of tries is bounded: a hub answering 429 at once cannot spin us.
                    wait = _retry_after(resp)
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
                raw = self._read_body(resp, method, path, give_up_at)
            finally:
                resp.close()
            return self._decode(status, raw, method, path)

    def _sleep_backoff(self, attempt: int, give_up_at: float) -> None:
        # Exponential backoff with full jitter, so parallel clients do not retry in step.
        time.sleep(max(0.0, min(random.uniform(0, self.backoff * 2 ** (attempt - 1)), give_up_at - time.monotonic())))

    def _read_body(self, resp: requests.Response, method: str, path: str, give_up_at: float) -> bytes:
        limit = self.max_response_bytes
        declared = resp.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HubProtocolError(f"hub reply to {method} {_route(path)} is {int(declared)} bytes, over the {limit}-byte limit")
        chunks, size = [], 0
        try:
            while True:
                # read1: whatever one socket read brings, so a hub dripping its reply
                # byte by byte still meets the overall deadline.
                chunk = resp.raw.read1(256 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise HubProtocolError(f"hub reply to {method} {_route(path)} is over the {limit}-byte limit")
                chunks.append(chunk)
                if time.monotonic() > give_up_at:
                    raise HubUnavailableError(f"hub {self.base_url} did not finish its reply to {method} {_route(path)} within the {self.deadline:g} s deadline")
        except (requests.RequestException, *urllib3_errors()) as exc:
            raise HubUnavailableError(f"hub {self.base_url} broke off its reply: {_describe(exc, self.base_url)}") from None
        return b"".join(chunks)

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


def urllib3_errors() -> tuple[type[Exception], ...]:
    import urllib3.exceptions

    return (urllib3.exceptions.HTTPError, OSError)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _route(path: str) -> str:
    return path.split("?", 1)[0]


def _hopeless(exc: Exception) -> bool:
    """A failure that retrying cannot mend (the name does not resolve, TLS against plain HTTP)."""
    return isinstance(exc, requests.exceptions.SSLError) or "Name or service not known" in str(exc) or "getaddrinfo" in str(exc)


def _describe(exc: Exception, base_url: str = "") -> str:
    text = str(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        if base_url.startswith("https:"):
            return "TLS handshake failed (is the hub plain http? then use an http:// hub_url)"
        return "TLS error"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out (is the host reachable, the port right?)"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "no reply in time (read timeout)"
    if "Name or service not known" in text or "getaddrinfo" in text or "nodename nor servname" in text:
        return "the host name does not resolve (check hub_url)"
    if "Connection refused" in text or "NewConnectionError" in text:
        return "connection refused (is the hub running, the port right?)"
    if isinstance(exc, (requests.exceptions.ConnectionError, OSError)) or "reset" in text.lower():
        if base_url.startswith("http:") and ("BadStatusLine" in text or "\\x15\\x03" in text):
            return "the hub answered something that is not HTTP (an https hub? then use an https:// hub_url)"
        return "connection reset or closed by the hub"
    return type(exc).__name__


def _retry_after(resp: requests.Response) -> float:
    """Seconds to wait after a 429: the header clamped to 0.5 s .. 1 h; 1 s when missing or odd."""
    value = resp.headers.get("retry-after", "1")
    try:
        wait = float(value)
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
