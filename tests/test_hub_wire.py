"""The local hub on the wire as clients nobody on this project wrote see it (issue 21): raw HTTP
over a socket with chunked bodies, as the hub project's Node scripts send them; refused
requests; headers; rate limits on by default; many parallel clients; bodies nested too deep;
the admin token; `hub token` without a database."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from hubprocess import RunningHub, chunked, node_post, raw_exchange


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def limited_hub(tmp_path: Path):
    """`hub serve` with its default (the real hub's) rate limits."""
    hub = RunningHub(tmp_path, rate_limits=True)
    yield hub
    if hub.proc and hub.proc.poll() is None:
        hub.proc.kill()
        hub.proc.wait()


# chunked bodies ---------------------------------------------------------------------------


def test_a_chunked_post_is_read_like_one_with_a_length(hub):
    alice, bob = hub.mint("alice"), hub.mint("bob")
    (reply,) = raw_exchange(hub.port, node_post("/api/message", {"to": "bob", "payload": {"text": "hi " * 40}}, alice))
    assert reply.status == 200 and json.loads(reply.body)["status"] == "sent" and not reply.closed
    (msg,) = hub.poll("bob", bob)["messages"]
    assert msg["payload"] == {"text": "hi " * 40} and msg["from"] == "alice"


def test_chunked_requests_keep_the_connection_usable(hub):
    """Two chunked POSTs on one kept-alive connection (chunk extensions and a trailer
    included): each gets its own reply, nothing of the first is read as a second request."""
    alice, bob = hub.mint("alice"), hub.mint("bob")
    first = node_post("/api/message", {"to": "bob", "payload": {"n": 1}}, alice)
    head, _, _ = first.partition(b"\r\n\r\n")
    data = json.dumps({"to": "bob", "payload": {"n": 2}}).encode()
    second = head + b"\r\n\r\n" + f"{len(data):x};ext=1\r\n".encode() + data + b"\r\n0\r\nX-Trailer: yes\r\n\r\n"
    replies = raw_exchange(hub.port, first, then=second)
    assert [r.status for r in replies] == [200, 200]
    assert [m["payload"]["n"] for m in hub.poll("bob", bob)["messages"]] == [1, 2]


def test_a_chunked_ack_with_a_bad_token_is_401_not_400(hub):
    alice = hub.mint("alice")
    (reply,) = raw_exchange(hub.port, node_post("/api/mailbox/alice/ack", {"seq": 1}, "f" * 64))
    assert reply.status == 401 and json.loads(reply.body) == {"error": "unauthorized"}
    (ok,) = raw_exchange(hub.port, node_post("/api/mailbox/alice/ack", {"seq": 1}, alice))
    assert ok.status == 200 and json.loads(ok.body) == {"status": "acked", "up_to": 1}


def test_a_chunked_body_over_the_size_limit_is_413_and_the_connection_closed(hub):
    alice = hub.mint("alice")
    head = node_post("/api/message", {}, alice).partition(b"\r\n\r\n")[0]
    data = json.dumps({"to": "bob", "payload": {"text": "x" * 8_100_000}}).encode()
    big = head + b"\r\n\r\n" + chunked(data, (1 << 20,))
    (reply,) = raw_exchange(hub.port, big)
    assert reply.status_line.startswith(b"HTTP/1.1 413") and reply.closed


@pytest.mark.parametrize(
    "broken",
    [
        b"zz\r\n{}\r\n0\r\n\r\n",  # a size that is not hex
        b"2\r\n{}XX0\r\n\r\n",  # no CRLF after the chunk
        b"-2\r\n{}\r\n0\r\n\r\n",
    ],
)
def test_a_broken_chunked_body_is_400_with_a_status_line_and_a_clean_close(hub, broken):
    alice = hub.mint("alice")
    head = node_post("/api/message", {}, alice).partition(b"\r\n\r\n")[0]
    (reply,) = raw_exchange(hub.port, head + b"\r\n\r\n" + broken, then=b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.status_line.startswith(b"HTTP/1.1 400") and reply.closed and reply.body == b""


def test_refused_requests_close_the_connection_so_no_leftover_is_read_as_a_request(hub):
    """A body the hub does not read (unknown route, both a length and chunked, an unknown
    transfer coding) ends the connection after a proper reply."""
    alice = hub.mint("alice")
    post = node_post("/api/message", {"payload": {}}, alice)
    coding = b"Transfer-Encoding: chunked"
    cases = {
        node_post("/api/nope", {"payload": {}}, alice): 404,
        post.replace(coding, coding + b"\r\nContent-Length: 5"): 400,
        post.replace(coding, b"Transfer-Encoding: gzip"): 501,
    }
    for request, status in cases.items():
        replies = raw_exchange(hub.port, request, then=b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert [r.status for r in replies] == [status] and replies[0].closed, request[:60]


def test_garbage_gets_a_status_line_not_a_bare_html_page(hub):
    for line in (b"37\r\n\r\n", b"GET /health\r\n\r\n", b"NONSENSE / HTTP/1.1 x\r\n\r\n"):
        (reply,) = raw_exchange(hub.port, line)
        assert reply.status_line.startswith(b"HTTP/1.1 400") and reply.closed and reply.body == b"", line


# headers and small presence details ------------------------------------------------------


def test_replies_carry_the_real_hubs_headers(hub):
    """Issue 25.5: as Bandit and Plug answer. A routed reply: date, content-length, vary,
    Plug's cache-control, the JSON type; no server header. A refusal before the router (400
    for a body that is not JSON, 413, 415, 500): `connection: close` only."""
    (reply,) = raw_exchange(hub.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.status_line == b"HTTP/1.1 200 OK\r\n"
    assert sorted(reply.headers) == ["cache-control", "content-length", "content-type", "date", "vary"]
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    assert reply.headers["cache-control"] == "max-age=0, private, must-revalidate"
    alice = hub.mint("alice")
    head = (
        f"POST /api/message HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\nContent-Type: application/json\r\n"
    )
    (invalid,) = raw_exchange(hub.port, (head + "Content-Length: 2\r\n\r\n{}").encode())
    assert invalid.status_line == b"HTTP/1.1 422 Unprocessable Content\r\n"
    (not_json,) = raw_exchange(hub.port, (head + "Content-Length: 2\r\n\r\n{x").encode())
    assert not_json.status == 400 and list(not_json.headers) == ["connection"] and not_json.closed
    (unauthorized,) = raw_exchange(hub.port, (head.replace(alice, "f" * 64) + "Content-Length: 2\r\n\r\n{}").encode())
    assert unauthorized.body == b'{"error":"unauthorized","hint":"provide Authorization: Bearer <token>"}'


def test_agents_have_fsm_state_unknown(hub):
    from websockets.sync.client import connect

    alice = hub.mint("alice")
    with connect(hub.url.replace("http://", "ws://") + "/ws", proxy=None, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "identify", "agent_id": "alice", "token": alice}))
        assert json.loads(ws.recv(timeout=30))["type"] == "identified"
        (listed,) = requests.get(hub.url + "/api/agents", timeout=30).json()["agents"]
        assert listed["fsm_state"] == "unknown" and listed["agent_id"] == "alice"


def test_other_methods_are_404_json(hub):
    for method in ("PUT", "DELETE", "PATCH"):
        r = requests.request(method, hub.url + "/api/message", json={}, timeout=30)
        assert r.status_code == 404 and r.json() == {"error": "not_found"}, method


# rate limits, on by default ---------------------------------------------------------------


def test_the_real_hubs_limits_are_the_default(limited_hub):
    """A burst of 60 messages per sender, then about one a second: 429 with Retry-After 1 and
    the real hub's body. Counted up to the first refusal, so a slow machine (refilling a token
    now and then during the burst) changes nothing."""
    hub = limited_hub
    alice, bob = hub.mint("alice"), hub.mint("bob")
    accepted = 0
    with requests.Session() as s:
        for _ in range(200):
            r = s.post(hub.url + "/api/message", json={"to": "bob", "payload": {}}, headers=auth(alice), timeout=30)
            if r.status_code != 200:
                break
            accepted += 1
    assert accepted >= 60
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert r.json() == {"error": "rate_limited", "retry_after_ms": 1000, "tier": "normal"}
    assert hub.post(bob, {"to": "alice", "payload": {}}).status_code == 200, "per sender"
    assert len(hub.poll("bob", bob)["messages"]) == accepted


def test_no_rate_limit_turns_them_off_and_cannot_be_mixed(hub, tmp_path):
    alice = hub.mint("alice")
    hub.mint("bob")
    with requests.Session() as s:
        body = {"to": "bob", "payload": {}}
        codes = {
            s.post(hub.url + "/api/message", json=body, headers=auth(alice), timeout=30).status_code for _ in range(80)
        }
    assert codes == {200} and "--no-rate-limit" in hub.command_args()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentcom_skill",
            "hub",
            "serve",
            "--db",
            str(tmp_path / "x.db"),
            "--no-rate-limit",
            "--rate-burst",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "--no-rate-limit" in out.stderr


# many parallel clients -------------------------------------------------------------------


def test_two_hundred_parallel_clients_all_get_answers(hub):
    """Issue 21 item 7: a burst of 200 connections at once. With socketserver's listen backlog
    of 5 some SYNs were dropped and retried a second later; the backlog is now the real hub's
    1024. Asserted on the setting and on every request succeeding, not on timings."""
    from agentcom_skill.hub.server import HubServer

    assert HubServer.request_queue_size == 1024
    alice = hub.mint("alice")
    hub.mint("bob")
    start = threading.Barrier(200, timeout=120)

    def one(n: int) -> int:
        request = node_post("/api/message", {"to": "bob", "payload": {"n": n}}, alice, keep_alive=False)
        start.wait()
        (reply,) = raw_exchange(hub.port, request, timeout=60)
        return reply.status

    with ThreadPoolExecutor(200) as pool:
        statuses = list(pool.map(one, range(200)))
    assert statuses == [200] * 200


@pytest.mark.slow  # serves a socket and runs ss
def test_the_listening_socket_has_the_large_backlog(tmp_path):
    """The backlog the kernel holds for the hub's socket (Send-Q of a listening socket in `ss`)."""
    import shutil

    from agentcom_skill.hub.server import HubServer
    from agentcom_skill.hub.store import HubStore

    if shutil.which("ss") is None:
        pytest.skip("no ss on this machine")
    store = HubStore(tmp_path / "hub.sqlite3")
    server = HubServer(("127.0.0.1", 0), store, log=open(os.devnull, "w"))
    try:
        port = server.server_address[1]
        out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, timeout=30).stdout
        send_q = int(out.split()[2])
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert send_q == min(1024, somaxconn) > 5
    finally:
        server.server_close()
        server.log.close()
        store.close()


# nesting depth -----------------------------------------------------------------------------


def nested(depth: int) -> dict:
    """An object `depth` levels deep."""
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_a_body_nested_too_deep_is_refused_and_the_mailbox_stays_readable(hub):
    """Issue 19 item 2: such a message was accepted and then every poll of the mailbox was 500."""
    alice, bob = hub.mint("alice"), hub.mint("bob")
    ok = hub.post(alice, {"to": "bob", "payload": nested(99)})  # the body is 100 levels: the limit
    assert ok.status_code == 200
    for depth in (101, 990, 5000, 100_000):
        r = requests.post(
            hub.url + "/api/message",
            data='{"to":"bob","payload":' + "[" * depth + "]" * depth + "}",
            headers={**auth(alice), "content-type": "application/json"},
            timeout=60,
        )
        assert r.status_code == 422, depth
        assert r.json() == {
            "error": "validation_failed",
            "errors": [{"field": "body", "error": "too_deep", "detail": "nested deeper than 100 levels"}],
        }
    polled = requests.get(hub.url + "/api/mailbox/bob?since=0", headers=auth(bob), timeout=60)
    assert polled.status_code == 200 and len(polled.json()["messages"]) == 1
    assert b"Traceback" not in hub.log_path.read_bytes() and b" 500 " not in hub.log_path.read_bytes()


# the admin token ---------------------------------------------------------------------------


def write_secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_admin_token_file_restricts_minting_to_it(hub_factory, tmp_path):
    admin = "a" * 40
    hub = hub_factory("--admin-token-file", str(write_secret(tmp_path / "admin", admin + "\n")))
    alice = hub.mint("alice")
    r = requests.post(hub.url + "/admin/tokens", json={"agent_id": "carol"}, headers=auth(admin), timeout=30)
    assert r.status_code == 201 and r.json()["agent_id"] == "carol"
    assert hub.poll("carol", r.json()["token"])["messages"] == []
    r = requests.post(hub.url + "/admin/tokens", json={"agent_id": "carol"}, headers=auth(alice), timeout=30)
    assert r.status_code == 403 and r.json()["error"] == "admin_only"
    assert requests.post(hub.url + "/admin/tokens", json={"agent_id": "carol"}, timeout=30).status_code == 401
    unknown = requests.post(hub.url + "/admin/tokens", json={"agent_id": "x"}, headers=auth("b" * 40), timeout=30)
    assert unknown.status_code == 401
    assert hub.poll("alice", alice)["messages"] == [], "the admin token changes nothing else"
    hub.stop()
    assert admin not in hub.log_path.read_text()


@pytest.mark.slow  # starts a subprocess
@pytest.mark.parametrize(
    "text,mode,why",
    [
        ("a" * 40, 0o644, "readable by others"),
        ("short", 0o600, "at least 16"),
        ("two words here, long enough", 0o600, "no spaces"),
    ],
)
def test_a_bad_admin_token_file_is_a_usage_error_that_never_shows_the_token(tmp_path, text, mode, why):
    path = write_secret(tmp_path / "admin", text, mode)
    command = [
        sys.executable,
        "-m",
        "agentcom_skill",
        "hub",
        "serve",
        "--port",
        "0",
        "--db",
        str(tmp_path / "h.db"),
        "--admin-token-file",
        str(path),
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and why in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert text not in out.stderr and "Traceback" not in out.stderr
    assert stat.S_IMODE(path.stat().st_mode) == mode


# `hub token` and `hub serve --help` -----------------------------------------------------------


@pytest.mark.slow  # starts a subprocess
def test_hub_token_without_db_and_no_database_says_so_and_creates_nothing(tmp_path):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "agentcom_skill", "hub", "token", "alice"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "--db" in out.stderr and "no hub database" in out.stderr
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.sqlite3"))
    command = [sys.executable, "-m", "agentcom_skill", "hub", "token", "alice", "--db", str(tmp_path / "h.db")]
    made = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0 and len(made.stdout.strip()) == 64, "an explicit --db may create the database"
    assert "created a new hub database" in made.stderr, "and says so (a typo in the path would go unnoticed)"
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stderr == ""


@pytest.mark.slow  # starts a subprocess
def test_hub_serve_help_documents_host_and_the_new_options():
    command = [sys.executable, "-m", "agentcom_skill", "hub", "serve", "--help"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for expected in ("Address to listen on", "--no-rate-limit", "--rate-burst", "--admin-token-file"):
        assert expected in out.stdout


# read timeouts (issue 27 item 10) -------------------------------------------------------------


def drip_until_closed(port: int, head: bytes, drip: bytes, every: float = 0.1, limit: float = 60) -> bytes:
    """Send `head`, then one byte of `drip` every `every` s (a slowloris client); what the hub
    answered once it closed the connection. Fails if it is still open after `limit` s."""
    import select
    import time

    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        give_up = time.monotonic() + limit
        answer = b""
        for byte in drip * int(limit / every + 1):
            readable, _, _ = select.select([sock], [], [], every)
            if readable:
                while chunk := sock.recv(65536):
                    answer += chunk
                return answer
            if time.monotonic() > give_up:
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return answer
    raise AssertionError(f"the connection was still open after {limit:g} s")


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_request_that_drips_in_is_cut_at_the_read_timeout(hub_factory, where):
    """A byte every 0.1 s never lets a per-read timeout (1 s here) expire: the request as a
    whole must be complete within it. Headers cut: closed without an answer; a body cut: 408."""
    hub = hub_factory("--read-timeout", "1")
    head = b"POST /api/message HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    if where == "headers":
        answer = drip_until_closed(hub.port, head, b"X-Slow: " + b"a" * 2000)
        assert answer == b""
    else:
        answer = drip_until_closed(hub.port, head + b"Content-Length: 5000\r\n\r\n", b" " * 5000)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer.lower()
    assert requests.get(hub.url + "/health", timeout=30).status_code == 200


def test_the_read_timeout_is_per_request_on_a_kept_alive_connection(hub_factory):
    """Requests that each arrive whole keep one connection working past the read timeout."""
    import time

    from hubprocess import _read_reply

    hub = hub_factory("--read-timeout", "2")
    with socket.create_connection(("127.0.0.1", hub.port), timeout=30) as sock:
        reader = sock.makefile("rb")
        started = time.monotonic()
        answered = 0
        while time.monotonic() - started < 3:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            reply = _read_reply(reader)
            assert reply is not None and reply.status == 200 and not reply.closed
            answered += 1
            time.sleep(0.5)
    assert answered >= 4
