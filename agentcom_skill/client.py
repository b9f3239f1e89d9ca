"""HubClient: the hub's HTTP contract, its errors and our retry policy, in one place.

Every reply is validated here before anything else sees it. The token travels only in
the Authorization header and appears in no log line or error message, even when a hub
echoes it back.

The wire is `requests`: one `requests.Session` per client (kept-alive connections, and the
proxy and CA settings people already give to Python programs: `HTTP_PROXY`, `HTTPS_PROXY`,
`NO_PROXY`, `REQUESTS_CA_BUNDLE`, as requests reads them; the config's `ca_bundle` wins
over the environment's bundle). A test that needs a stand-in hub mounts a requests
transport adapter on `client.session`. What requests does not give, this module adds:
- one deadline for a whole call (retries, waits and a reply dripping in byte by byte);
- our retry policy (idempotent calls only, or any call that cannot have been sent;
  exponential backoff with full jitter; a bounded wait for 429);
- a size limit on replies, declared and streamed;
- errors as `AgentComError` kinds with one line saying what to fix.

This module is imported only on paths that talk to a hub (it pulls in requests).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit, urlunsplit

import requests
import urllib3

from . import __version__
from .errors import AuthError, ConfigError, HubProtocolError, HubUnavailableError, RateLimitedError, UsageError
from .message import MailboxBatch, parse_mailbox_bytes

log = logging.getLogger("agentcom.http")

RETRY_STATUSES = frozenset({502, 503, 504})
USER_AGENT = f"agentcom/{__version__}"
CHUNK_BYTES = 256 * 1024
PROXY_SCHEMES = ("http", "https")
CA_BUNDLE_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")  # what requests reads, in its order


# the wire ----------------------------------------------------------------------------


class TransportError(Exception):
    """The exchange failed below HTTP. `sent` is False when the request cannot have reached
    the peer (safe to retry any call); `hopeless` when retrying cannot help."""

    def __init__(self, reason: str, *, sent: bool, hopeless: bool = False):
        super().__init__(reason)
        self.reason, self.sent, self.hopeless = reason, sent, hopeless


class BodyTooLarge(Exception):
    def __init__(self, size: int | None):
        self.size = size


class DeadlinePassed(Exception):
    pass


class UndecodableBody(Exception):
    pass


class Peer(NamedTuple):
    """Who is at the other end, for error messages: "hub" and its `hub_url` setting, or
    "gateway" and `wake.url`."""

    name: str
    url_setting: str


HUB = Peer("hub", "hub_url")


class Reply(NamedTuple):
    status: int
    headers: Mapping[str, str]  # case-insensitive (requests' own mapping)
    body: bytes
    complete: bool = True  # False: only the first max_bytes of a longer body (see `exchange`)


class BearerAuth(requests.auth.AuthBase):
    """The token as a bearer header. Always passing an auth object (NO_AUTH when a call
    needs none) also stops requests from sending ~/.netrc credentials to the hub."""

    def __init__(self, token: str | None):
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._token:
            request.headers["Authorization"] = f"Bearer {self._token}"
        return request


NO_AUTH = BearerAuth(None)


def new_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    # urllib3 disables Nagle's algorithm on every connection (TCP_NODELAY, its default
    # socket options): a small request is not held back waiting for the reply's ACK.
    return session


def exchange(
    session: requests.Session,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: bytes | None,
    auth: BearerAuth,
    verify: str | None,
    timeouts: tuple[float, float],
    give_up_at: float,
    max_bytes: int,
    peer: Peer,
    prefix_ok: bool = False,
) -> Reply:
    """One HTTP exchange, its body read to the end in chunks (the deadline is checked
    between them, so a peer dripping its reply still meets it), at most `max_bytes`; with
    `prefix_ok`, a longer 2xx body is cut there and comes back marked incomplete."""
    try:
        resp = session.request(
            method,
            url,
            headers=dict(headers),
            data=body,
            auth=auth,
            timeout=timeouts,
            stream=True,
            allow_redirects=False,
            verify=verify,
        )
    except requests.RequestException as exc:
        raise _transport_error(exc, url, peer) from None
    try:
        prefix_ok = prefix_ok and 200 <= resp.status_code < 300
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes and not prefix_ok:
            raise BodyTooLarge(int(declared))
        chunks, size = [], 0
        for chunk in _chunks(resp.raw):
            size += len(chunk)
            if size > max_bytes:
                if not prefix_ok:
                    raise BodyTooLarge(None)
                chunks.append(chunk[: len(chunk) - (size - max_bytes)])
                resp.close()  # the rest is not read: this connection cannot be reused
                return Reply(resp.status_code, resp.headers, b"".join(chunks), complete=False)
            chunks.append(chunk)
            if time.monotonic() > give_up_at:
                raise DeadlinePassed()
    except urllib3.exceptions.DecodeError:
        resp.close()
        raise UndecodableBody() from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        resp.close()
        raise _transport_error(exc, url, peer) from None
    except BaseException:
        resp.close()  # the rest of the body is unread: this connection cannot be reused
        raise
    release = getattr(resp.raw, "release_conn", None)
    if release is not None:
        release()  # read to the end: the connection is ready for the next call
    return Reply(resp.status_code, resp.headers, b"".join(chunks))


def _chunks(raw: Any) -> Iterator[bytes]:
    # read1: whatever one socket read brings (urllib3 >= 2.3), not a full chunk, so the
    # caller sees a slow body arrive and can give up on time.
    read: Callable[[int], bytes] = getattr(raw, "read1", None) or raw.read
    while True:
        chunk = read(CHUNK_BYTES)
        if not chunk:
            return
        yield chunk


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """An exception and everything it wraps (requests -> urllib3 -> socket), outermost first."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        inner = [getattr(e, "reason", None), *e.args, e.__cause__, e.__context__]
        todo.extend(i for i in inner if isinstance(i, BaseException))


def _transport_error(exc: BaseException, url: str, peer: Peer) -> TransportError:
    """What went wrong below HTTP, in one line that says what to check."""
    chain = list(_causes(exc))
    if isinstance(exc, requests.exceptions.ProxyError):
        return _proxy_error(chain, url)
    https = url.lower().startswith("https:")
    return (
        _tls_error(chain, https, peer)
        or _connect_error(chain, peer)
        or _exchange_error(chain, https, peer)
        or TransportError(f"connection failed ({type(exc).__name__})", sent=True)
    )


def _has(chain: list[BaseException], *kinds: type[BaseException]) -> bool:
    return any(isinstance(e, kinds) for e in chain)


def _named(chain: list[BaseException], *names: str) -> bool:
    # socket.gaierror, ssl.SSLCertVerificationError, http.client.BadStatusLine: by name, so
    # this module need not import ssl or http.client for an isinstance check
    return any(type(e).__name__ in names for e in chain)


def _resolve_failed(chain: list[BaseException]) -> bool:
    return _has(chain, urllib3.exceptions.NameResolutionError) or _named(chain, "gaierror")


def _connect_timed_out(chain: list[BaseException]) -> bool:
    # urllib3's NewConnectionError (refused, unresolvable, no route) is also a
    # ConnectTimeoutError: only the others are timeouts
    errors = urllib3.exceptions
    return _has(chain, requests.exceptions.ConnectTimeout) or any(
        isinstance(e, errors.ConnectTimeoutError) and not isinstance(e, errors.NewConnectionError) for e in chain
    )


def _tls_error(chain: list[BaseException], https: bool, peer: Peer) -> TransportError | None:
    if not (
        _has(chain, requests.exceptions.SSLError, urllib3.exceptions.SSLError)
        or any(type(e).__module__ == "ssl" for e in chain)
    ):
        return None
    if _named(chain, "SSLCertVerificationError"):
        return TransportError(
            f"the {peer.name}'s TLS certificate is not trusted (for a self-signed {peer.name}, set ca_bundle "
            f"in the config file or REQUESTS_CA_BUNDLE to its CA certificate)",
            sent=False,
            hopeless=True,
        )
    if https:
        return TransportError(
            f"TLS handshake failed (is the {peer.name} plain http? then use an http:// {peer.url_setting})",
            sent=False,
            hopeless=True,
        )
    return TransportError("TLS error", sent=True, hopeless=True)


def _connect_error(chain: list[BaseException], peer: Peer) -> TransportError | None:
    """The connection could not be made: the request was not sent."""
    if _resolve_failed(chain):
        return TransportError(f"the host name does not resolve (check {peer.url_setting})", sent=False, hopeless=True)
    if _has(chain, ConnectionRefusedError):
        return TransportError(f"connection refused (is the {peer.name} running, the port right?)", sent=False)
    if _connect_timed_out(chain):
        return TransportError("connection timed out (is the host reachable, the port right?)", sent=False)
    if _has(chain, urllib3.exceptions.NewConnectionError):
        reason = next((e.strerror for e in chain if isinstance(e, OSError) and e.strerror), None)
        return TransportError(f"cannot connect ({reason or 'no route'})", sent=False)
    invalid = (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema)
    if _has(chain, *invalid):
        return TransportError(f"the URL cannot be used (check {peer.url_setting})", sent=False, hopeless=True)
    return None


def _exchange_error(chain: list[BaseException], https: bool, peer: Peer) -> TransportError | None:
    """The request went out and the reply did not come back whole."""
    if _has(chain, requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError):
        return TransportError("no reply in time (read timeout)", sent=True)
    if _named(chain, "BadStatusLine", "LineTooLong"):
        hint = "" if https else f" (an https {peer.name}? then use an https:// {peer.url_setting})"
        return TransportError(f"the {peer.name} answered something that is not HTTP{hint}", sent=True, hopeless=True)
    if _has(chain, ConnectionError, urllib3.exceptions.ProtocolError, requests.exceptions.ChunkedEncodingError):
        hint = "" if https else f" (if the {peer.name} serves https, use an https:// {peer.url_setting})"
        return TransportError(f"connection reset or closed by the {peer.name}{hint}", sent=True)
    return None


def _proxy_error(chain: list[BaseException], url: str) -> TransportError:
    proxy = describe_proxy(url)
    if _has(chain, ConnectionRefusedError):
        return TransportError(
            f"the proxy {proxy} refused the connection (is the proxy running? or list the hub in NO_PROXY)", sent=False
        )
    if _resolve_failed(chain):
        return TransportError(f"the proxy {proxy}: its host name does not resolve", sent=False, hopeless=True)
    if _connect_timed_out(chain):
        return TransportError(f"the proxy {proxy} did not answer in time", sent=False)
    prefix = "Tunnel connection failed: "
    tunnel = next((str(e) for e in chain if str(e).startswith(prefix)), None)
    if tunnel:  # the proxy answered CONNECT with an error status
        return TransportError(
            f"the proxy {proxy} would not connect to it ({tunnel[len(prefix) :][:80]})", sent=False, hopeless=True
        )
    return TransportError(f"cannot go through the proxy {proxy}", sent=False)


# proxies and CA bundles, as requests reads them -----------------------------------------


def environment_proxy(url: str) -> tuple[str, str] | None:
    """The proxy requests will use for `url` (NO_PROXY applied) and the environment variable
    it came from, or None."""
    if not any(name[-6:].lower() == "_proxy" for name in os.environ):
        return None  # the common case, decided without asking urllib for the proxy table
    proxies = requests.utils.get_environ_proxies(url)
    if not proxies:
        return None
    parts = urlsplit(url)
    for key in (f"{parts.scheme}://{parts.hostname}", parts.scheme, f"all://{parts.hostname}", "all"):
        if proxies.get(key):
            return proxies[key], _proxy_variable(key)
    return None


def _proxy_variable(key: str) -> str:
    # urllib's reading, which requests uses: a lower-case variable beats an upper-case one.
    wanted = f"{key}_proxy"
    names = [n for n in os.environ if n.lower() == wanted and os.environ[n]]
    return wanted if wanted in names else (names[0] if names else wanted.upper())


def redact_url(url: str) -> str:
    """A URL without its user:password part (also when the URL is malformed, as a proxy
    setting without a scheme is: everything before the last `@` goes)."""
    if "@" not in url:
        return url
    parts = urlsplit(url)
    if parts.netloc and "@" in parts.netloc:
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            port = ""
        return urlunsplit((parts.scheme, f"****@{parts.hostname or ''}{port}", parts.path, parts.query, parts.fragment))
    return "****@" + url.rsplit("@", 1)[1]


def describe_proxy(url: str) -> str:
    found = environment_proxy(url)
    if found is None:
        return "(from the environment)"
    return f"{redact_url(found[0])} (from environment variable {found[1]})"


def check_proxy(url: str) -> None:
    """A proxy for `url` must be an http:// or https:// URL: requests reads `proxy:3128` as a
    URL whose scheme is `proxy` and fails with a riddle; say what to write instead."""
    found = environment_proxy(url)
    if found is None:
        return
    value, variable = found
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = urlsplit(""), False
    if parts.scheme.lower() not in PROXY_SCHEMES or not parts.hostname or not port_ok:
        raise ConfigError(
            f"proxy {redact_url(value)[:80]!r} from environment variable {variable} is not an http:// or https:// URL "
            f"with a host: write it like http://proxy.example:3128 (or list the hub in NO_PROXY)"
        )


def environment_ca_bundle() -> tuple[str, str] | None:
    for variable in CA_BUNDLE_VARS:
        if os.environ.get(variable):
            return os.environ[variable], variable
    return None


def check_ca_bundle_environment(url: str) -> None:
    """requests only looks at a CA bundle for https; a missing one would fail there with a
    long OSError. Name the variable instead."""
    if not url.lower().startswith("https:"):
        return
    found = environment_ca_bundle()
    if found is not None and not os.path.exists(found[0]):
        raise ConfigError(
            f"the CA bundle {found[0]} from environment variable {found[1]} does not exist "
            f"(point it at a PEM file of CA certificates, or unset it)"
        )


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
            raise HubProtocolError("hub sent a message reply without a string 'id'")
        return msg_id

    def replies(self, message_id: str) -> list[dict[str, Any]] | None:
        """The messages the hub's thread index holds as replies to `message_id` (the real hub's
        `GET /api/threads/{id}/replies`), as it sent them; None when this hub has no such index
        (404: the local hub), so a caller knows it cannot tell."""
        try:
            body = self._request("GET", f"/api/threads/{quote(message_id, safe='')}/replies")
        except NoSuchRoute:
            return None
        replies = body.get("replies") if isinstance(body, dict) else None
        if not isinstance(replies, list):
            raise HubProtocolError("hub sent a thread replies reply without a 'replies' list")
        return [r for r in replies if isinstance(r, dict)]

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
    ) -> Any:
        """One call with retries; the decoded JSON body (or, with `raw`, a 2xx `Reply`, whose
        body may be cut at max_response_bytes)."""
        headers = {"Accept": "application/json"}
        data = None
        if json_body is not None:
            data = json.dumps(json_body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        bearer = BearerAuth(self._token) if auth else NO_AUTH
        call = f"{method} {_route(path)}"
        attempt, waited_for_limit, rate_limited = 0, 0.0, 0
        give_up_at = time.monotonic() + self.deadline
        while True:
            started = time.monotonic()
            try:
                reply = self._exchange(call, method, path, headers, data, bearer, give_up_at, prefix_ok=raw)
            except TransportError as exc:
                log.debug("%s failed: %s (%.1f ms)", call, exc.reason, (time.monotonic() - started) * 1000)
                if (idempotent or not exc.sent) and not exc.hopeless and attempt < self.retries:
                    attempt += 1
                    self._sleep_backoff(attempt, give_up_at)
                    continue
                where = f" (hub_url from {self.url_source})" if self.url_source else ""
                error = HubUnavailableError(f"hub {self.base_url}{where} unreachable: {exc.reason}")
                error.sent = exc.sent  # False: the request never left (a caller may send it again safely)
                raise error from None
            status = reply.status
            log.debug("%s %s -> %d (%.1f ms)", method, path, status, (time.monotonic() - started) * 1000)
            if status == 429:
                # A retry-after of 0, negative or nonsense still waits a little, and the
                # number of tries is bounded: a hub answering 429 at once cannot spin us.
                wait = _retry_after(reply.headers.get("retry-after"))
                rate_limited += 1
                if (
                    rate_limited <= 5
                    and waited_for_limit + wait <= self.max_rate_limit_wait
                    and time.monotonic() + wait < give_up_at
                ):
                    waited_for_limit += wait
                    self._sleep(wait)
                    continue
                raise RateLimitedError(f"hub {self.base_url} is rate-limiting {call}; retry after {wait:g} s")
            if status in RETRY_STATUSES and idempotent and attempt < self.retries:
                attempt += 1
                self._sleep_backoff(attempt, give_up_at)
                continue
            if raw and 200 <= status < 300:
                if not reply.body:
                    raise HubProtocolError(f"hub reply to {call} is empty")
                return reply
            return self._decode(status, reply.body, method, path)

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
    ) -> Reply:
        """One exchange within what is left of the deadline; a reply that cannot be used
        is an error here (only failures below HTTP come out as TransportError)."""
        left = give_up_at - time.monotonic()
        if left <= 0:
            raise HubUnavailableError(
                f"hub {self.base_url} gave no complete reply to {call} within the {self.deadline:g} s deadline"
            )
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
        except UndecodableBody:
            raise HubProtocolError(f"hub reply to {call} cannot be decoded (its content-encoding)") from None
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


class NoSuchRoute(HubProtocolError):
    """The hub answered 404 for an /api/ route: it has no such endpoint (or hub_url is wrong)."""


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
