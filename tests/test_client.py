"""The hub client on requests: its own policies with a stand-in transport adapter mounted on
the session (fast), then the wire for real: TCP_NODELAY, a forward proxy on loopback, a TLS
hub with a self-signed certificate, and the bad proxy and CA settings, through the CLI."""

from __future__ import annotations

import gzip
import io
import json
import socket
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import agent_env, free_port, gzip_bomb, run_cli, run_json, self_signed_cert
from faultproxy import FaultProxy
from forwardproxy import ForwardProxy
from hypothesis import given, settings
from hypothesis import strategies as st
from requests.adapters import BaseAdapter
from urllib3 import HTTPResponse

from agentcom_skill.client import HubClient
from agentcom_skill.config import WakeSettings, load_settings
from agentcom_skill.errors import (
    AgentComError,
    ConfigError,
    HubProtocolError,
    HubUnavailableError,
    PossiblyDelivered,
    RateLimitedError,
    UsageError,
)
from agentcom_skill.transport import ContentDecoder
from agentcom_skill.wake import Waker
from agentcom_skill.watchstate import hold_watch_lock, write_status

HUB = "http://hub.test"
TOKEN = "t" * 40
MAILBOX = {"agent_id": "alice", "messages": [], "last_seq": 0, "count": 0}


class Drip(io.RawIOBase):
    """A body that arrives one byte at a time, slower than any deadline."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        time.sleep(0.02)
        buffer[0:1] = b" "
        return 1


class ScriptedHub(BaseAdapter):
    """Answers each request with the next scripted step: (status, body, headers), or an
    exception to raise, or a callable taking the request. Records every request."""

    def __init__(self, *steps: Any):
        super().__init__()
        self.steps = list(steps)
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            step = step(request)
        status, body, headers = (step + ({},))[:3] if len(step) == 2 else step
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        raw_body = body if isinstance(body, io.IOBase) else io.BytesIO(body)
        raw = HTTPResponse(body=raw_body, headers=headers, status=status, preload_content=False)
        response = requests.Response()
        response.status_code, response.raw, response.url, response.request = status, raw, request.url, request
        response.headers = requests.structures.CaseInsensitiveDict(headers)
        return response

    def close(self) -> None:
        pass


def client(adapter: ScriptedHub, **kwargs: Any) -> tuple[HubClient, list[float]]:
    slept: list[float] = []
    hub = HubClient(HUB, TOKEN, sleep=slept.append, **kwargs)
    hub.session.mount(HUB, adapter)
    return hub, slept


# the policies, with a stand-in adapter ----------------------------------------------------


def test_idempotent_calls_retry_5xx_with_full_jitter_backoff():
    adapter = ScriptedHub((503, b"{}"), (502, b""), (504, b""), (200, MAILBOX))
    hub, slept = client(adapter, backoff=0.2)
    assert not hub.poll("alice").messages
    assert len(adapter.requests) == 4
    assert [0 <= s <= 0.2 * 2**i for i, s in enumerate(slept)] == [True, True, True]
    adapter = ScriptedHub((503, b"{}"))
    hub, slept = client(adapter)
    with pytest.raises(HubUnavailableError, match="failed \\(503\\)"):
        hub.poll("alice")
    assert len(adapter.requests) == 4, "three retries, then the error"


def test_a_send_is_retried_only_when_it_cannot_have_reached_the_hub():
    adapter = ScriptedHub((503, b"{}"))
    hub, _ = client(adapter)
    with pytest.raises(HubUnavailableError):
        hub.send("bob", None, {"text": "hi"})
    assert len(adapter.requests) == 1, "a 503 may come after the hub stored it: never sent twice"
    refused = requests.ConnectionError(ConnectionRefusedError(111, "Connection refused"))
    adapter = ScriptedHub(refused, (200, {"id": "00000000000000aa"}))
    hub, _ = client(adapter)
    assert hub.send("bob", None, {"text": "hi"}) == "00000000000000aa" and len(adapter.requests) == 2
    reset = requests.ConnectionError(ConnectionResetError(104, "Connection reset by peer"))
    adapter = ScriptedHub(reset, (200, {"id": "00000000000000aa"}))
    hub, _ = client(adapter)
    with pytest.raises(HubUnavailableError, match="connection reset or closed by the hub"):
        hub.send("bob", None, {"text": "hi"})
    assert len(adapter.requests) == 1


@pytest.mark.parametrize("value", ["0", "-5", "nan", "soon", None])
def test_429_with_an_odd_retry_after_waits_a_little_and_is_bounded(value):
    adapter = ScriptedHub((429, b"{}", {"retry-after": value} if value is not None else {}))
    hub, slept = client(adapter)
    with pytest.raises(RateLimitedError, match="rate-limiting"):
        hub.poll("alice")
    assert 1 <= len(adapter.requests) <= 6 and all(s >= 0.5 for s in slept) and sum(slept) <= 10


def test_429_with_a_short_retry_after_is_waited_out():
    adapter = ScriptedHub((429, b"{}", {"retry-after": "2"}), (200, MAILBOX))
    hub, slept = client(adapter)
    assert not hub.poll("alice").messages and slept == [2.0]


def test_reply_size_limit_declared_and_streamed():
    big = json.dumps({"agents": [], "pad": "x" * 5000}).encode()
    adapter = ScriptedHub((200, big, {"content-length": str(len(big))}))
    hub, _ = client(adapter, max_response_bytes=1000)
    with pytest.raises(HubProtocolError, match=f"{len(big)} bytes, over the 1000-byte limit .*max_response_bytes"):
        hub.agents()
    adapter = ScriptedHub((200, big))  # no content-length: counted as it streams
    hub, _ = client(adapter, max_response_bytes=1000)
    with pytest.raises(HubProtocolError, match="over the 1000-byte limit"):
        hub.agents()


@pytest.mark.parametrize("declared", [True, False])
def test_a_mailbox_reply_over_the_limit_gives_the_messages_complete_in_it(declared):
    def entry(seq: int, text: str) -> dict[str, Any]:
        return {
            "id": f"{seq:016x}",
            "from": "bob",
            "to": "alice",
            "type": "chat",
            "payload": {"text": text},
            "seq": seq,
        }

    body = json.dumps({**MAILBOX, "messages": [entry(1, "a"), entry(2, "b"), entry(3, "z" * 5000)]}).encode()
    headers = {"content-length": str(len(body))} if declared else {}
    hub, _ = client(ScriptedHub((200, body, headers)), max_response_bytes=1000)
    batch = hub.poll("alice")
    assert [m.seq for m in batch.messages] == [1, 2] and not batch.complete and batch.unreadable == ()
    alone = json.dumps({**MAILBOX, "messages": [entry(1, "z" * 5000)]}).encode()
    hub, _ = client(ScriptedHub((200, alone, headers)), max_response_bytes=1000)
    with pytest.raises(HubProtocolError, match="first message alone is over the 1000-byte limit"):
        hub.poll("alice")


def test_a_dripping_body_meets_the_overall_deadline():
    adapter = ScriptedHub(lambda request: (200, io.BufferedReader(Drip(), 1), {"content-length": "100000"}))
    hub, _ = client(adapter, deadline=0.5, read_timeout=30)
    started = time.monotonic()
    with pytest.raises(HubUnavailableError, match="deadline"):
        hub.poll("alice")
    assert time.monotonic() - started < 10


def test_the_token_goes_only_in_the_header_and_never_into_an_error():
    echo = {"error": f"bad token {TOKEN}", "errors": [{"field": "auth", "detail": TOKEN}]}
    adapter = ScriptedHub((422, echo), (200, {"status": "ok"}))
    hub, _ = client(adapter)
    with pytest.raises(UsageError) as raised:
        hub.send("bob", None, {"text": "hi"})
    assert TOKEN not in str(raised.value) and "****" in str(raised.value) and "\n" not in str(raised.value)
    assert adapter.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in adapter.requests[0].url + (adapter.requests[0].body or b"").decode()
    hub.health()
    assert "Authorization" not in adapter.requests[1].headers, "no token (and no ~/.netrc) where none is needed"


@pytest.mark.parametrize(
    "status,kind,words",
    [
        (401, "auth", "refused the token"),
        (404, "hub_protocol", "without /api"),
        (409, "config", "conflict"),
        (400, "usage", "rejected"),
        (500, "hub_unavailable", "failed (500)"),
        (418, "hub_protocol", "answered 418"),
    ],
)
def test_statuses_map_to_one_error_kind_each_in_one_line(status, kind, words):
    hub, _ = client(ScriptedHub((status, b"{}")))
    with pytest.raises(AgentComError) as raised:
        hub.poll("alice")
    assert raised.value.kind == kind and words in str(raised.value) and "\n" not in str(raised.value)


def test_the_connection_disables_nagle(hub):
    """Latency: a request is not held back waiting for an ACK (urllib3's TCP_NODELAY)."""
    with HubClient(hub.url, None) as client_:
        assert client_.health()
        pools = client_.session.get_adapter(hub.url).poolmanager.pools
        kept = [conn for key in pools.keys() for conn in pools[key].pool.queue if conn is not None]
        assert len(kept) == 1, "one kept-alive connection"
        assert kept[0].sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_an_unreachable_gateway_is_named_as_the_gateway():
    """Issue 20 item 16: the wake's unreachable error named the hub."""
    url = f"http://127.0.0.1:{free_port()}"
    outcome = Waker(WakeSettings(mode="wake", url=url, timeout=5)).send("", ["a" * 16], [1])
    assert outcome.kind == "retry" and f"gateway {url} (wake.url) unreachable" in outcome.detail
    assert "is the gateway running" in outcome.detail and "hub" not in outcome.detail


# the wire for real: proxies and CA bundles ---------------------------------------------------


def state_rows(tmp_path: Path) -> dict[str, Any]:
    import sqlite3

    out = {}
    for path in sorted((tmp_path / "state").rglob("messages.sqlite3")):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = ("messages", "meta", "sent")
            out[str(path)] = [db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables]
        finally:
            db.close()
    return out


@pytest.fixture
def duo(hub, tmp_path):
    alice, bob = hub.mint("alice"), hub.mint("bob")
    env = {k: v for k, v in agent_env(hub, "alice", alice, tmp_path).items() if "proxy" not in k.lower()}
    return hub, env, alice, bob


@pytest.fixture
def forward_proxy():
    proxy = ForwardProxy()
    yield proxy
    proxy.close()


def test_check_and_send_go_through_a_forward_proxy_and_no_proxy_skips_it(duo, forward_proxy):
    hub, env, alice, bob = duo
    hub.post(bob, {"to": "alice", "payload": {"text": "through the proxy"}})
    via = {**env, "HTTP_PROXY": forward_proxy.url}
    assert [m["text"] for m in run_json("check", env=via)["messages"]] == ["through the proxy"]
    assert run_cli("send", "bob", "back through it", env=via).returncode == 0
    seen = [(method, target) for method, target in forward_proxy.seen]
    assert ("GET", f"{hub.url}/api/mailbox/alice?since=0") in seen and ("POST", f"{hub.url}/api/message") in seen
    forward_proxy.seen.clear()
    assert run_cli("check", env={**via, "NO_PROXY": "127.0.0.1"}).returncode == 0
    assert forward_proxy.seen == [], "NO_PROXY lists the hub: straight to it"


@pytest.fixture
def tls_hub(duo, tmp_path):
    cert, key = self_signed_cert(tmp_path)
    front = FaultProxy(duo[0].url, tls=(str(cert), str(key)))
    yield front, cert
    front.close()


def test_a_self_signed_hub_with_ca_bundle_in_the_config_or_requests_ca_bundle(duo, tls_hub, tmp_path, forward_proxy):
    hub, env, alice, bob = duo
    front, cert = tls_hub
    hub.post(bob, {"to": "alice", "payload": {"text": "over tls"}})
    env = {**env, "AGENTCOM_HUB_URL": front.url}
    untrusted = run_cli("check", env=env)
    assert untrusted.returncode == 4 and "not trusted" in untrusted.stderr and "ca_bundle" in untrusted.stderr
    assert len(untrusted.stderr.strip().splitlines()) == 1
    (tmp_path / "alice.toml").write_text(f"ca_bundle = {json.dumps(str(cert))}\n")
    via = {**env, "HTTPS_PROXY": forward_proxy.url}
    assert [m["text"] for m in run_json("check", env=via)["messages"]] == ["over tls"]
    assert [m for m, _ in forward_proxy.seen] == ["CONNECT"], "the tunnel, through the proxy"
    (tmp_path / "alice.toml").write_text("")
    hub.post(bob, {"to": "alice", "payload": {"text": "trusted from the environment"}})
    got = run_json("check", env={**env, "REQUESTS_CA_BUNDLE": str(cert)})
    assert [m["text"] for m in got["messages"]] == ["trusted from the environment"]


def test_a_proxy_that_refuses_is_exit_4_naming_it_and_changes_nothing(duo, tmp_path):
    hub, env, alice, bob = duo
    hub.post(bob, {"to": "alice", "payload": {"text": "first"}})
    run_json("check", env=env)
    hub.post(bob, {"to": "alice", "payload": {"text": "second"}})
    before = state_rows(tmp_path)
    dead = f"http://user:secret@127.0.0.1:{free_port()}"
    out = run_cli("check", env={**env, "HTTP_PROXY": dead})
    assert out.returncode == 4 and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert "proxy" in out.stderr and "refused" in out.stderr and "environment variable HTTP_PROXY" in out.stderr
    assert "secret" not in out.stderr, "proxy credentials are never printed"
    assert state_rows(tmp_path) == before


@pytest.mark.parametrize(
    "value",
    [
        "proxy.example:3128",
        "127.0.0.1:3128",
        "socks5://127.0.0.1:1080",
        "me:secret@proxy.example:3128",
    ],
)
def test_a_proxy_without_an_http_scheme_is_exit_2_naming_it_and_changes_nothing(duo, tmp_path, value):
    hub, env, alice, bob = duo
    run_json("check", env=env)
    hub.post(bob, {"to": "alice", "payload": {"text": "waiting"}})
    before = state_rows(tmp_path)
    for command in (["check"], ["send", "bob", "hi"]):
        out = run_cli(*command, env={**env, "http_proxy": value})
        assert out.returncode == 2, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
        assert "environment variable http_proxy" in out.stderr and "http://" in out.stderr
        assert "secret" not in out.stderr, "proxy credentials are never printed"
    assert state_rows(tmp_path) == before


def test_a_ca_bundle_that_does_not_exist_is_exit_2_naming_where_it_was_set(duo, tls_hub, tmp_path):
    hub, env, alice, bob = duo
    front, cert = tls_hub
    env = {**env, "AGENTCOM_HUB_URL": front.url}
    config = tmp_path / "alice.toml"
    assert run_cli("check", env={**env, "REQUESTS_CA_BUNDLE": str(cert)}).returncode == 0
    hub.post(bob, {"to": "alice", "payload": {"text": "waiting"}})
    before = state_rows(tmp_path)
    missing = tmp_path / "no-such-ca.pem"
    out = run_cli("check", env={**env, "REQUESTS_CA_BUNDLE": str(missing)})
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert str(missing) in out.stderr and "environment variable REQUESTS_CA_BUNDLE" in out.stderr
    config.write_text(f"ca_bundle = {json.dumps(str(missing))}\n")
    out = run_cli("check", env=env)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "ca_bundle" in out.stderr and f"config file {config}" in out.stderr
    assert state_rows(tmp_path) == before
    with pytest.raises(ConfigError, match="ca_bundle"):
        load_settings({"ca_bundle": str(missing)}, env=env)


# paths that need no network do not load the HTTP stack ---------------------------------------

PROBE = """
import sys
from agentcom_skill.cli import main
try:
    main(sys.argv[2:])
except SystemExit as exc:
    assert not exc.code, exc.code
loaded = sorted(m for m in ("requests", "urllib3") if m in sys.modules)
open(sys.argv[1], "w").write(",".join(loaded))
"""


def test_a_watch_that_is_not_connected_leaves_check_polling_the_hub(duo):
    """The hub keeps an agent's messages in its mailbox while no WebSocket is connected: a
    check or a wait beside a watch that is reconnecting must fetch them, not read the store."""
    hub, env, alice, bob = duo
    settings = load_settings(env=env)
    fd = hold_watch_lock(settings.agent_state_dir())
    assert fd is not None
    write_status(settings.agent_state_dir(), {"connected_since": None, "last_event": "reconnecting: in 40.0 s"})
    try:
        first = hub.post(bob, {"to": "alice", "payload": {"text": "while the watch is away"}}).json()["id"]
        result = run_json("check", env=env)
        assert [m["id"] for m in result["messages"]] == [first]
        assert any("not connected" in w and "reconnecting" in w for w in result["warnings"]), result["warnings"]
        second = hub.post(bob, {"to": "alice", "payload": {"text": "and another"}}).json()["id"]
        waited = run_json("wait", "--timeout", "0", env=env)
        assert [m["id"] for m in waited["messages"]] == [second]
    finally:
        import os

        os.close(fd)


def test_paths_that_need_no_network_do_not_import_requests(duo, tmp_path):
    hub, env, alice, bob = duo
    msg_id = hub.post(bob, {"to": "alice", "payload": {"text": "kept"}}).json()["id"]
    run_json("check", env=env)
    settings = load_settings(env=env)
    fd = hold_watch_lock(settings.agent_state_dir())  # as a connected watch does
    assert fd is not None
    write_status(settings.agent_state_dir(), {"connected_since": time.time()})
    try:
        commands = (["check", "--json"], ["inbox"], ["show", msg_id], ["thread", msg_id], ["search", "kept"], ["log"])
        for command in commands:
            marker = tmp_path / "loaded.txt"
            done = subprocess.run(
                [sys.executable, "-c", PROBE, str(marker), *command],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, (command, done.stderr)
            assert marker.read_text() == "", f"agentcom {' '.join(command)} imported {marker.read_text()}"
    finally:
        import os

        os.close(fd)


# compressed replies (issue 25) -------------------------------------------------------------


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


ENCODINGS = {
    "gzip": gzipped,
    "x-gzip": gzipped,
    "deflate": zlib.compress,
    "deflate-raw": lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS),
    "gzip-two-members": lambda data: gzipped(data[: len(data) // 2]) + gzipped(data[len(data) // 2 :]),
}


@pytest.mark.parametrize("name", ENCODINGS)
def test_a_compressed_reply_is_decoded_on_every_call(name):
    coding = {"deflate-raw": "deflate", "gzip-two-members": "gzip"}.get(name, name)
    encode = ENCODINGS[name]
    mailbox = {**MAILBOX, "messages": [{"id": "00000000000000aa", "from": "bob", "payload": {"text": "é"}, "seq": 3}]}
    steps = [
        (200, encode(json.dumps(mailbox).encode()), {"content-encoding": coding}),
        (200, encode(b'{"id":"00000000000000bb"}'), {"content-encoding": coding}),
        (200, encode(b'{"agents":[]}'), {"content-encoding": coding}),
    ]
    adapter = ScriptedHub(*steps)
    hub, _ = client(adapter)
    assert [m.text for m in hub.poll("alice").messages] == ["é"]
    assert hub.send("bob", None, {"text": "hi"}) == "00000000000000bb"
    assert hub.agents() == []
    assert adapter.requests[0].headers["Accept-Encoding"] == "gzip, deflate", "only what we decode"


@settings(max_examples=50, deadline=None)
@given(
    st.binary(max_size=3000), st.lists(st.integers(1, 400), min_size=1, max_size=30), st.sampled_from(sorted(ENCODINGS))
)
def test_decoding_any_chunking_gives_the_body_back(body, cuts, name):
    coding = {"deflate-raw": "deflate", "gzip-two-members": "gzip"}.get(name, name)
    encoded = ENCODINGS[name](body)
    decoder, out, at = ContentDecoder(coding), b"", 0
    for size in cuts * (len(encoded) // sum(cuts) + 1):
        out += decoder.feed(encoded[at : at + size], 10_000)
        at += size
        if at >= len(encoded):
            break
    decoder.finish()
    assert out == body


def test_a_compressed_bomb_stops_at_the_limit_with_the_memory_of_the_limit():
    bomb = gzip_bomb()
    assert len(bomb) < 2 * 1024 * 1024
    limit = 4 * 1024 * 1024
    for call in ("agents", "poll"):
        hub, _ = client(ScriptedHub((200, bomb, {"content-encoding": "gzip"})), max_response_bytes=limit)
        tracemalloc.start()
        try:
            started = time.monotonic()
            with pytest.raises(HubProtocolError):
                getattr(hub, call)(*(("alice",) if call == "poll" else ()))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 6 * limit, f"{call}: {peak} bytes held for a {limit}-byte limit"
        assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "body,coding,words",
    [
        (b"\x1f\x8b\x08\x00garbage that is not deflate" * 3, "gzip", "gzip stream is corrupt"),
        (gzipped(b'{"agents":[]}')[:-12], "gzip", "gzip stream is cut short"),
        (b'{"agents":[]}', "br", "'br' is not gzip or deflate"),
        (b'{"agents":[]}', "gzip, br", "stacks encodings"),
    ],
)
def test_a_reply_that_cannot_be_decoded_is_one_line_naming_why(body, coding, words):
    hub, _ = client(ScriptedHub((200, body, {"content-encoding": coding})))
    with pytest.raises(HubProtocolError, match=words) as raised:
        hub.agents()
    assert raised.value.exit_code == 5 and "\n" not in str(raised.value)


def test_a_dripping_compressed_body_meets_the_overall_deadline():
    class GzipDrip(io.RawIOBase):
        def __init__(self) -> None:
            self.data = gzipped(b" " * 100_000)
            self.at = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            time.sleep(0.02)
            buffer[0:1] = self.data[self.at : self.at + 1]
            self.at += 1
            return 1

    adapter = ScriptedHub(lambda request: (200, io.BufferedReader(GzipDrip(), 1), {"content-encoding": "gzip"}))
    hub, _ = client(adapter, deadline=0.5, read_timeout=30)
    started = time.monotonic()
    with pytest.raises(HubUnavailableError, match="deadline"):
        hub.poll("alice")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "step",
    [
        (200, b"\x1f\x8b\x08\x00 broken", {"content-encoding": "gzip"}),
        (200, b"<html>a proxy's page</html>"),
        (200, b'{"status":"sent"}'),
        requests.ConnectionError(ConnectionResetError(104, "Connection reset by peer")),
        requests.exceptions.ReadTimeout("read timed out"),
    ],
    ids=["corrupt-gzip", "not-json", "no-id", "reset", "read-timeout"],
)
def test_a_send_whose_reply_is_lost_is_possibly_delivered_and_never_repeated(step):
    adapter = ScriptedHub(step, (200, {"id": "00000000000000aa"}))
    hub, slept = client(adapter)
    with pytest.raises(PossiblyDelivered, match="probably reached hub .* not repeated") as raised:
        hub.send("bob", None, {"text": "hi"})
    assert len(adapter.requests) == 1 and not slept
    assert raised.value.exit_code == 4 and "\n" not in str(raised.value)


def test_a_request_body_is_utf8_and_one_over_the_hub_limit_is_refused_before_sending():
    adapter = ScriptedHub((200, {"id": "00000000000000aa"}))
    hub, _ = client(adapter)
    hub.send("bob", None, {"text": "é" * 2_800_000})
    sent = adapter.requests[0].body
    assert len(sent) < 5_700_000 and "é".encode() in sent, "UTF-8, not \\u00e9 (6 bytes each)"
    with pytest.raises(UsageError, match=r"too large for the hub \(8,[0-9,]+ bytes, limit 8,000,000\)"):
        hub.send("bob", None, {"text": "é" * 4_000_001})
    assert len(adapter.requests) == 1, "refused before sending"
    hub.send("bob", None, {"text": "\ud800 lone surrogate"})  # only the escaped form can carry it
    assert b"\\ud800" in adapter.requests[1].body


def test_send_whose_reply_is_unreadable_says_probably_delivered_and_is_not_repeated(duo):
    """Issue 25.4: the hub took the message, its reply was broken on the way: exit 0, the user
    reads "probably sent", `sent` shows it unconfirmed, and bob has it exactly once."""
    hub, env, alice, bob = duo
    proxy = FaultProxy(hub.url)
    try:
        proxy.arm("corrupt_gzip", path_prefix="/api/message")
        env = {**env, "AGENTCOM_HUB_URL": proxy.url}
        out = run_cli("send", "bob", "only once", env=env)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        assert "probably sent" in out.stdout and "not sent again" in out.stdout
        assert "probably reached hub" in out.stderr
        assert [m["payload"]["text"] for m in hub.poll("bob", bob)["messages"]] == ["only once"]
        assert [(m["text"], m["confirmed"]) for m in run_json("sent", env=env)["messages"]] == [("only once", False)]
        assert [p[0] for p in proxy.seen if p[1] == "/api/message"] == ["POST"]
    finally:
        proxy.close()
