"""The HTTP exchange every peer of ours goes through (the hub, an OpenClaw gateway's hooks, an
A2A endpoint): one request on a `requests.Session`, its reply decoded and bounded, and what
went wrong below HTTP sorted into one line that says what to check.

`requests` gives proxies and CA bundles as people already configure them for Python programs
(`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`, `REQUESTS_CA_BUNDLE`). What it does not give, this
module adds:
- one deadline for a whole exchange, checked between the chunks of a reply dripping in;
- the reply's `Content-Encoding` undone here (gzip, deflate), chunk by chunk, so that the
  size limit bounds the *decoded* bytes: a small compressed bomb stops at the limit, with the
  memory of the limit;
- errors as plain exceptions (`TransportError`, `BodyTooLarge`, `DeadlinePassed`,
  `UndecodableBody`) that each client turns into its own words.

Imported only on paths that talk to a peer (it pulls in requests).
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3

from . import __version__
from .errors import ConfigError

USER_AGENT = f"agentcom/{__version__}"
CHUNK_BYTES = 256 * 1024
PROXY_SCHEMES = ("http", "https")
CA_BUNDLE_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")  # what requests reads, in its order


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
    """The reply's Content-Encoding is one we do not speak, or its compressed stream is broken."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


class Peer(NamedTuple):
    """Who is at the other end, for error messages: "hub" and its `hub_url` setting, or
    "gateway" and `wake.url`."""

    name: str
    url_setting: str


class HttpReply(NamedTuple):
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
    # Only what `ContentDecoder` undoes (requests would also offer br or zstd when those
    # packages happen to be installed). Compression stays on: a remote hub's mailbox is ~10x
    # smaller gzipped.
    session.headers["Accept-Encoding"] = ACCEPT_ENCODING
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
) -> HttpReply:
    """One HTTP exchange, its body read to the end in chunks (the deadline is checked
    between them, so a peer dripping its reply still meets it) and decoded by its
    Content-Encoding, at most `max_bytes` of decoded body; with `prefix_ok`, a longer 2xx
    body is cut there and comes back marked incomplete."""
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
        decoder = ContentDecoder(resp.headers.get("content-encoding", ""))
        declared = resp.headers.get("content-length", "")
        if decoder.identity and declared.isdigit() and int(declared) > max_bytes and not prefix_ok:
            raise BodyTooLarge(int(declared))
        chunks, size = [], 0
        for raw in _chunks(resp.raw):
            chunk = decoder.feed(raw, max_bytes - size)
            size += len(chunk)
            if size > max_bytes:
                if not prefix_ok:
                    raise BodyTooLarge(None)
                chunks.append(chunk[: len(chunk) - (size - max_bytes)])
                resp.close()  # the rest is not read: this connection cannot be reused
                return HttpReply(resp.status_code, resp.headers, b"".join(chunks), complete=False)
            chunks.append(chunk)
            if time.monotonic() > give_up_at:
                raise DeadlinePassed()
        decoder.finish()
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        resp.close()
        raise _transport_error(exc, url, peer) from None
    except BaseException:
        resp.close()  # the rest of the body is unread: this connection cannot be reused
        raise
    release = getattr(resp.raw, "release_conn", None)
    if release is not None:
        release()  # read to the end: the connection is ready for the next call
    return HttpReply(resp.status_code, resp.headers, b"".join(chunks))


class ContentDecoder:
    """Undoes a reply's Content-Encoding one chunk at a time, never producing more than the
    caller has room for (plus one byte, to tell "exactly full" from "over"): what a compressed
    body would decode to beyond the limit is never made, so a bomb costs the limit's memory."""

    def __init__(self, header: str):
        codings = [c.strip().lower() for c in header.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if len(codings) > 1:
            raise UndecodableBody(f"its content-encoding {_quoted(header)} stacks encodings")
        self.coding = codings[0] if codings else ""
        if self.coding not in ("", *DECODERS):
            raise UndecodableBody(f"its content-encoding {_quoted(header)} is not gzip or deflate")
        self.identity = not self.coding
        self._inflate: Any = None  # made on the first bytes (deflate: zlib-wrapped or raw)
        self._started = False

    def feed(self, data: bytes, room: int) -> bytes:
        if self.identity or not data:
            return data
        if self._inflate is None:
            self._inflate = zlib.decompressobj(_wbits(self.coding, data))
        self._started = True
        try:
            out = self._inflate.decompress(data, max(room, 0) + 1)
            # A gzip body may hold several members one after the other (RFC 1952).
            while self._inflate.eof and self._inflate.unused_data and len(out) <= room:
                rest = self._inflate.unused_data
                self._inflate = zlib.decompressobj(_wbits(self.coding, rest))
                out += self._inflate.decompress(rest, max(room - len(out), 0) + 1)
        except zlib.error:
            raise UndecodableBody(f"its {self.coding} stream is corrupt") from None
        return out

    def finish(self) -> None:
        """The body has ended: a compressed stream must have ended with it."""
        if not self.identity and self._started and not self._inflate.eof:
            raise UndecodableBody(f"its {self.coding} stream is cut short")


DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
ACCEPT_ENCODING = "gzip, deflate"


def _wbits(coding: str, first: bytes) -> int:
    if coding != "deflate" or len(first) < 2:
        return DECODERS.get(coding, zlib.MAX_WBITS)
    # HTTP's "deflate" is the zlib format, but some servers send raw deflate: tell by the header.
    zlib_header = first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
    return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS


def _quoted(text: str) -> str:
    return repr("".join(c if c.isprintable() else "?" for c in text[:40]))


def _chunks(raw: Any) -> Iterator[bytes]:
    # read1: whatever one socket read brings (urllib3 >= 2.3), not a full chunk, so the
    # caller sees a slow body arrive and can give up on time. The raw stream is not decoded
    # (requests leaves that to its own readers): `ContentDecoder` does it, within the limit.
    read: Callable[..., bytes] = getattr(raw, "read1", None) or raw.read
    while True:
        chunk = read(CHUNK_BYTES, decode_content=False)
        if not chunk:
            return
        yield chunk


def clamp_wait(seconds: float, floor: float = 1.0) -> float:
    """A wait a peer asked for (Retry-After), held between `floor` and an hour: the one clamp
    of the hub client, the wakes and the A2A pacer."""
    return min(max(seconds, floor), 3600.0)


def retry_after_seconds(value: str | None, floor: float = 1.0) -> float | None:
    """A Retry-After header in seconds, clamped (`clamp_wait`); None when missing or odd (a
    date, NaN): the caller's own backoff then."""
    try:
        wait = float(value) if value is not None else None
    except ValueError:
        return None
    if wait is None or wait != wait:  # (NaN)
        return None
    return clamp_wait(wait, floor)


def retry_after(value: str | None, floor: float = 0.5) -> float:
    """Seconds to wait after a 429 or 503: the header clamped to `floor` .. 1 h; 1 s when
    missing or odd (a date, a negative number, NaN)."""
    wait = retry_after_seconds(value if value is not None else "1", floor)
    return max(1.0, floor) if wait is None else wait


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
