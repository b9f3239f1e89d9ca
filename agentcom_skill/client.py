"""HubClient: the hub's HTTP contract, its errors and our retry policy, in one place.

Every reply is validated here before anything else sees it. The token travels only in
the Authorization header and appears in no log line or error message, even when a hub
echoes it back.

The wire is `transport.exchange` on one `requests.Session` per client (kept-alive
connections, proxies and CA bundles as requests reads them; the config's `ca_bundle` wins
over the environment's bundle; replies decoded and bounded there). A test that needs a
stand-in hub mounts a requests transport adapter on `client.session`. This module adds:
- one deadline for a whole call (retries, waits and a reply dripping in byte by byte);
- our retry policy (idempotent calls only, or any call that cannot have been sent;
  exponential backoff with full jitter; a bounded wait for 429);
- a send whose request may have reached the hub is never repeated: when its reply is lost,
  cut or unreadable, it is `PossiblyDelivered`, not failed;
- errors as `AgentComError` kinds with one line saying what to fix.

This module is imported only on paths that talk to a hub (it pulls in requests).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import requests

from .errors import (
    AgentComError,
    AuthError,
    ConfigError,
    HubProtocolError,
    HubUnavailableError,
    NoSuchRoute,
    PossiblyDelivered,
    RateLimitedError,
    UsageError,
)
from .message import MailboxBatch, parse_mailbox_bytes
from .transport import (
    NO_AUTH,
    BearerAuth,
    BodyTooLarge,
    DeadlinePassed,
    HttpReply,
    Peer,
    TransportError,
    UndecodableBody,
    check_ca_bundle_environment,
    check_proxy,
    describe_proxy,
    exchange,
    new_session,
    retry_after,
)

log = logging.getLogger("agentcom.http")

RETRY_STATUSES = frozenset({502, 503, 504})
HUB = Peer("hub", "hub_url")
HISTORY_PAGE, HISTORY_PAGES = 200, 5  # the hub answers at most 200 a query
HUB_MAX_BODY = 8_000_000  # the hub refuses a larger request body (Plug.Parsers' length), closing the connection


# the hub -----------------------------------------------------------------------------


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
        ca_bundle: str | None = None,
        token_source: str = "",
        url_source: str = "",
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
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
        self.ca_bundle = ca_bundle  # validated by the config; None: the environment's or certifi's
        self._sleep = sleep
        check_proxy(self.base_url)
        if ca_bundle is None:
            check_ca_bundle_environment(self.base_url)
        self.session = session if session is not None else new_session()

    def use_token(self, token: str) -> None:
        """Go on with another token (the old one was refused and its source now holds a new one)."""
        self._token = token

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HubClient:
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
            if not isinstance(a.get("agent_id"), str) or (
                caps is not None and not (isinstance(caps, list) and all(isinstance(c, str) for c in caps))
            ):
                raise HubProtocolError(
                    "hub sent an /api/agents entry without a string agent_id "
                    "or with capabilities that are not a list of strings"
                )
            if a.get("status") is not None and not isinstance(a["status"], str):
                raise HubProtocolError("hub sent an /api/agents entry whose status is not a string")
        return agents

    def poll(self, agent_id: str, since: int = 0) -> MailboxBatch:
        # The body is parsed by message.py from its bytes: one entry too deep or otherwise
        # unreadable is set aside there, and must not fail the whole reply here.
        # A reply over max_response_bytes is read that far: the messages complete in it are
        # taken (the rest wait at the hub), so a few huge messages cannot block a mailbox.
        reply = self._request("GET", f"/api/mailbox/{quote(agent_id, safe='')}?since={int(since)}", raw=True)
        return parse_mailbox_bytes(reply.body, since, complete=reply.complete, limit=self.max_response_bytes)

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
            raise self._unconfirmed("POST /api/message", "the reply has no string 'id'")
        return msg_id

    def routed(self, sender: str, start_ms: int, end_ms: int, deadline: float = 2.0) -> dict[str, str | None]:
        """Whom the hub routed `sender`'s messages of that span of time to (id -> `to`; None
        for a broadcast), from its message history: a pushed frame carries no `to`, so this is
        how a broadcast is told from a direct message. Kept short (`deadline`): the watch asks
        it while pushed messages wait to be stored. A hub without a history: NoSuchRoute."""
        found = self.history({"from": sender, "start_time": start_ms, "end_time": end_ms}, deadline)
        routed: dict[str, str | None] = {}
        for m in found:
            if isinstance(m.get("id"), str):
                to = m.get("to")
                routed[m["id"]] = to if isinstance(to, str) and to.strip().casefold() != "broadcast" else None
        return routed

    def history(self, filters: dict[str, Any], deadline: float) -> list[dict[str, Any]]:
        """What the hub's message history (`GET /api/messages`) holds for these filters (from,
        to, start_time, end_time), page by page, at most HISTORY_PAGES of them."""
        found: list[dict[str, Any]] = []
        cursor = 0
        for _ in range(HISTORY_PAGES):
            query = urlencode({**filters, "cursor": cursor, "limit": HISTORY_PAGE})
            body = self._request("GET", f"/api/messages?{query}", deadline=deadline)
            messages = body.get("messages") if isinstance(body, dict) else None
            if not isinstance(messages, list):
                raise HubProtocolError("hub sent an /api/messages reply without a 'messages' list")
            found += [m for m in messages if isinstance(m, dict)]
            next_cursor = body.get("cursor")
            if len(messages) < HISTORY_PAGE or not isinstance(next_cursor, int) or next_cursor <= cursor:
                break
            cursor = next_cursor
        return found

    # channels and the room (protocol.md 1.8) ------------------------------

    def channels(self) -> list[dict[str, Any]]:
        body = self._request("GET", "/api/channels", auth=False)
        listed = body.get("channels") if isinstance(body, dict) else None
        if not isinstance(listed, list):
            raise HubProtocolError("hub sent a channel list without a 'channels' list")
        return [c for c in listed if isinstance(c, dict)]

    def channel_info(self, name: str) -> dict[str, Any]:
        body = self._request("GET", f"/api/channels/{quote(name, safe='')}", auth=False)
        if not isinstance(body, dict):
            raise HubProtocolError("hub sent channel details that are not an object")
        return body

    def create_channel(self, name: str, description: str | None = None) -> bool:
        """True when created, False when it existed already."""
        body: dict[str, Any] = {"name": name}
        if description:
            body["description"] = description
        try:
            self._request("POST", "/api/channels", json_body=body, idempotent=False)
        except ConfigError as exc:  # 409: it exists
            if "channel_exists" in str(exc):
                return False
            raise
        return True

    def subscribe(self, name: str, on: bool = True) -> None:
        action = "subscribe" if on else "unsubscribe"
        self._request("POST", f"/api/channels/{quote(name, safe='')}/{action}", json_body={})

    def publish(self, name: str, type_: str | None, payload: dict[str, Any], reply_to: str | None = None) -> int:
        """Publish to a channel: its seq in the channel's history (the hub gives no id)."""
        body: dict[str, Any] = {"payload": payload}
        if type_ is not None:
            body["type"] = type_
        if reply_to is not None:
            body["reply_to"] = reply_to
        reply = self._request("POST", f"/api/channels/{quote(name, safe='')}/publish", json_body=body, idempotent=False)
        seq = reply.get("seq") if isinstance(reply, dict) else None
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise self._unconfirmed("POST /api/channels/{ch}/publish", "the reply has no integer 'seq'")
        return seq

    def channel_history(self, name: str, since: int, limit: int) -> list[dict[str, Any]]:
        body = self._request(
            "GET", f"/api/channels/{quote(name, safe='')}/history?since={int(since)}&limit={int(limit)}", auth=False
        )
        entries = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise HubProtocolError("hub sent a channel history without a 'messages' list")
        return [e for e in entries if isinstance(e, dict)]

    def room_post(self, text: str) -> dict[str, Any]:
        """Post to the room: the message as the hub keeps it ({seq, from, text, type, timestamp})."""
        reply = self._request("POST", "/api/room/message", json_body={"text": text}, idempotent=False)
        if not isinstance(reply, dict) or not isinstance(reply.get("seq"), int):
            raise self._unconfirmed("POST /api/room/message", "the reply has no integer 'seq'")
        return reply

    def room_messages(self, since: int, limit: int) -> Any:
        """The room's reply to `GET /api/room/messages` (read by groups.read_room_entries)."""
        return self._request("GET", f"/api/room/messages?since={int(since)}&limit={int(limit)}", auth=False)

    def answers_sent(self, sender: str, to: str, start_ms: int, deadline: float = 5.0) -> list[dict[str, Any]] | None:
        """What the hub routed from `sender` to `to` since `start_ms`: how an answer whose POST
        was cut short is found after a restart. None when this hub keeps no history (404), so
        the caller knows it cannot tell."""
        try:
            return self.history({"from": sender, "to": to, "start_time": start_ms}, deadline)
        except NoSuchRoute:
            return None

    def register(self, agent_id: str) -> dict[str, Any]:
        body = self._request(
            "POST", "/api/onboard/register", json_body={"agent_id": agent_id}, auth=False, idempotent=False
        )
        if not isinstance(body, dict) or not isinstance(body.get("token"), str):
            raise HubProtocolError("hub sent a register reply without a 'token'")
        return body

    # plumbing -----------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        auth: bool = True,
        idempotent: bool = True,
        raw: bool = False,
        deadline: float | None = None,
    ) -> Any:
        """One call with retries; the decoded JSON body (or, with `raw`, a 2xx `HttpReply`, whose
        body may be cut at max_response_bytes). A call that is not idempotent and may have
        reached the hub is never repeated: when its reply cannot be read it is
        `PossiblyDelivered`."""
        headers = {"Accept": "application/json"}
        data = None
        call = f"{method} {_route(path)}"
        if json_body is not None:
            data = request_body(json_body, call)
            headers["Content-Type"] = "application/json"
        bearer = BearerAuth(self._token) if auth else NO_AUTH
        attempt, waited_for_limit, rate_limited = 0, 0.0, 0
        deadline = self.deadline if deadline is None else min(deadline, self.deadline)
        give_up_at = time.monotonic() + deadline
        while True:
            if time.monotonic() >= give_up_at:  # (not sent this time: the deadline went on waits)
                raise HubUnavailableError(
                    f"hub {self.base_url} gave no complete reply to {call} within the {deadline:g} s deadline"
                )
            reply = self._attempt(call, method, path, headers, data, bearer, give_up_at, raw, idempotent, attempt)
            status = reply.status if reply is not None else 0
            if status == 429:
                # A retry-after of 0, negative or nonsense still waits a little, and the
                # number of tries is bounded: a hub answering 429 at once cannot spin us.
                wait = retry_after(reply.headers.get("retry-after") if reply is not None else None)
                rate_limited += 1
                if rate_limited > 5 or waited_for_limit + wait > self.max_rate_limit_wait:
                    raise RateLimitedError(f"hub {self.base_url} is rate-limiting {call}; retry after {wait:g} s")
                if time.monotonic() + wait >= give_up_at:
                    raise RateLimitedError(f"hub {self.base_url} is rate-limiting {call}; retry after {wait:g} s")
                waited_for_limit += wait
                self._sleep(wait)
                continue
            if reply is None or (status in RETRY_STATUSES and idempotent and attempt < self.retries):
                attempt += 1
                self._sleep_backoff(attempt, give_up_at)
                continue
            if raw and 200 <= status < 300:
                if not reply.body:
                    raise HubProtocolError(f"hub reply to {call} is empty")
                return reply
            try:
                return self._decode(status, reply.body, method, path)
            except HubProtocolError as exc:  # a 2xx that is not JSON: the hub took the call
                if not idempotent:
                    raise self._unconfirmed(call, str(exc)) from None
                raise

    def _attempt(
        self,
        call: str,
        method: str,
        path: str,
        headers: Mapping[str, str],
        data: bytes | None,
        bearer: BearerAuth,
        give_up_at: float,
        raw: bool,
        idempotent: bool,
        attempt: int,
    ) -> HttpReply | None:
        """One exchange: its reply, or None for a failure worth another try."""
        started = time.monotonic()
        try:
            reply = self._exchange(call, method, path, headers, data, bearer, give_up_at, prefix_ok=raw)
        except TransportError as exc:
            log.debug("%s failed: %s (%.1f ms)", call, exc.reason, (time.monotonic() - started) * 1000)
            if (idempotent or not exc.sent) and not exc.hopeless and attempt < self.retries:
                return None
            if not idempotent and exc.sent:
                raise self._unconfirmed(call, f"the connection failed after it was sent: {exc.reason}") from None
            where = f" (hub_url from {self.url_source})" if self.url_source else ""
            raise HubUnavailableError(f"hub {self.base_url}{where} unreachable: {exc.reason}") from None
        except AgentComError as exc:  # a reply came, but it cannot be used
            if not idempotent:
                raise self._unconfirmed(call, str(exc)) from None
            raise
        log.debug("%s %s -> %d (%.1f ms)", method, path, reply.status, (time.monotonic() - started) * 1000)
        return reply

    def _unconfirmed(self, call: str, why: str) -> PossiblyDelivered:
        return PossiblyDelivered(
            f"{call} probably reached hub {self.base_url}, but its reply was lost or unreadable ({why}); "
            "it is not repeated, so nothing is sent twice"
        )

    def _exchange(
        self,
        call: str,
        method: str,
        path: str,
        headers: Mapping[str, str],
        data: bytes | None,
        bearer: BearerAuth,
        give_up_at: float,
        prefix_ok: bool = False,
    ) -> HttpReply:
        """One exchange within what is left of the deadline; a reply that cannot be used
        is an error here (only failures below HTTP come out as TransportError)."""
        left = max(give_up_at - time.monotonic(), 0.001)
        timeouts = (min(self.timeout[0], left), min(self.timeout[1], left))
        try:
            return exchange(
                self.session,
                method,
                self.base_url + path,
                headers=headers,
                body=data,
                auth=bearer,
                verify=self.ca_bundle,
                timeouts=timeouts,
                give_up_at=give_up_at,
                max_bytes=self.max_response_bytes,
                peer=HUB,
                prefix_ok=prefix_ok,
            )
        except BodyTooLarge as exc:
            size = f"{exc.size} bytes, " if exc.size else ""
            raise HubProtocolError(
                f"hub reply to {call} is {size}over the {self.max_response_bytes}-byte limit"
                " (the setting max_response_bytes: raise it for a mailbox holding very large messages)"
            ) from None
        except UndecodableBody as exc:
            raise HubProtocolError(f"hub reply to {call} cannot be decoded: {exc.why}") from None
        except DeadlinePassed:
            raise HubUnavailableError(
                f"hub {self.base_url} did not finish its reply to {call} within the {self.deadline:g} s deadline"
            ) from None

    def _sleep_backoff(self, attempt: int, give_up_at: float) -> None:
        # Exponential backoff with full jitter, so parallel clients do not retry in step.
        ceiling = self.backoff * 2 ** (attempt - 1)
        self._sleep(max(0.0, min(random.uniform(0, ceiling), give_up_at - time.monotonic())))

    def _decode(self, status: int, raw: bytes, method: str, path: str) -> Any:
        call = f"{method} {_route(path)}"
        body: Any = None
        if raw:
            try:
                body = json.loads(raw, parse_constant=_no_constant)
            except (ValueError, RecursionError):
                if 200 <= status < 300:
                    raise HubProtocolError(f"hub reply to {call} is not JSON") from None
        if 200 <= status < 300:
            if body is None:
                raise HubProtocolError(f"hub reply to {call} is empty")
            return body
        raise self._status_error(status, body, call, path)

    def _status_error(self, status: int, body: Any, call: str, path: str) -> Exception:
        """The error for a reply that is not a success, as one line saying what to fix."""
        if status in (401, 403):
            where = f" from {self.token_source}" if self.token_source else ""
            return AuthError(
                f"hub {self.base_url} refused the token{where} ({status}) for {call}: "
                f"check it belongs to this agent id at this hub"
            )
        if status == 404 and isinstance(body, dict) and body.get("error") == "channel_not_found":
            return UsageError(
                f"hub {self.base_url} has no such channel ({call}): `agentcom join '#name' --create` makes one"
            )
        if status == 404 and path.startswith("/api/"):
            return NoSuchRoute(
                f"hub {self.base_url} has no {_route(path)} (404): check hub_url is the hub's base URL, without /api"
            )
        detail = self._scrub(_error_text(body))
        if status == 409:
            return ConfigError(f"hub refused {call}: {detail or 'conflict'}")
        if status in (400, 413, 415, 422):
            return UsageError(f"hub rejected {call} ({status}): {detail or 'invalid request'}")
        if status == 407:
            return HubUnavailableError(f"the proxy {describe_proxy(self.base_url)} wants credentials (407) for {call}")
        if status >= 500:
            return HubUnavailableError(f"hub {self.base_url} failed ({status}) on {call}")
        return HubProtocolError(f"hub answered {status} to {call}")

    def _scrub(self, text: str) -> str:
        """Never repeat our own token, even when the hub echoes it back."""
        if self._token and self._token in text:
            text = text.replace(self._token, "****")
        return text


def request_body(value: Any, call: str) -> bytes:
    """A JSON request body in UTF-8, as the hub's own clients send it (escaping every non-ASCII
    character would triple a body of accented text), refused here when the hub would refuse
    it for its size."""
    try:
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate: only the escaped form can carry it
        data = json.dumps(value, separators=(",", ":")).encode()
    if len(data) > HUB_MAX_BODY:
        raise UsageError(
            f"{call}: the request is too large for the hub ({len(data):,} bytes, limit {HUB_MAX_BODY:,}); "
            "nothing was sent"
        )
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _route(path: str) -> str:
    return path.split("?", 1)[0]


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
