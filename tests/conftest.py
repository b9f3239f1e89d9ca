"""Fixtures: a real `agentcom hub serve` process on a free loopback port, and CLI runners."""

from __future__ import annotations

import functools
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from hubprocess import ROOT, RunningHub, agent_env, free_port, load_trace  # noqa: F401 - re-exported to the tests

# A proxy set on the developer's machine would route the suite's loopback traffic through it:
# the tests that exercise proxies set their own, per process.
for _name in [n for n in os.environ if n.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")]:
    del os.environ[_name]


def pytest_configure(config: pytest.Config) -> None:
    """Compile the package once: these machines set PYTHONDONTWRITEBYTECODE, so otherwise every
    `python -m agentcom_skill` the tests start compiles it from source again (~40 ms a run)."""
    import compileall

    compileall.compile_dir(str(ROOT / "agentcom_skill"), quiet=1)


# The `fast` marker: every test that starts no process (no hub, no subprocess, no socket server,
# no OpenClaw), so `python -m pytest -m fast` is a loop of seconds. It is given here, not written
# on each test, so it cannot drift: a test is fast unless
#   - it uses one of PROCESS_FIXTURES (directly or through another fixture), or
#   - it, its class or its module is marked `slow` (a module that starts processes itself says
#     `pytestmark = pytest.mark.slow`; one such test in a fast module says `@pytest.mark.slow`), or
#   - it is marked `openclaw` or `realhub`.
# `_no_process_in_fast_tests` then holds the rule: a fast test that starts a process or listens on
# a socket fails, naming the way out (a fixture listed here, or the `slow` marker).
PROCESS_FIXTURES = frozenset(
    {
        "hub",  # conftest: an `agentcom hub serve` process
        "hub_factory",  # conftest: hubs on demand
        "realhub",  # conftest: the real hub over the network
        "limited_hub",  # test_hub_wire: a hub with rate limits
        "standin",  # test_a2a: the A2A stand-in process
        "forward_proxy",  # test_client: a proxy process
        "openclaw",  # test_openclaw: the real OpenClaw
    }
)
SLOW_MARKERS = ("slow", "openclaw", "realhub")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        slow = any(item.get_closest_marker(name) for name in SLOW_MARKERS)
        if not slow and PROCESS_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.fast)


class StartsAProcess(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _no_process_in_fast_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test marked `fast` may start no process and serve no socket (a port found free and a
    connection refused are fine). Checked on the thread that
    runs the test (a thread a slow test left behind may still start things)."""
    if request.node.get_closest_marker("fast") is None:
        return
    import socket
    import threading

    name = request.node.nodeid

    def refuse(original: Any, what: str) -> Any:
        def guard(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is threading.main_thread():
                raise StartsAProcess(
                    f"{name} is marked fast but {what}: use a fixture in conftest.PROCESS_FIXTURES "
                    "or mark it (or its module) `slow`"
                )
            return original(*args, **kwargs)

        return guard

    for owner, attr, what in (
        (subprocess.Popen, "_execute_child", "starts a subprocess"),
        (os, "fork", "forks"),
        (socket.socket, "listen", "listens on a socket"),
    ):
        monkeypatch.setattr(owner, attr, refuse(getattr(owner, attr), what))


@pytest.fixture
def hub(tmp_path: Path):
    h = RunningHub(tmp_path)
    yield h
    if h.proc and h.proc.poll() is None:
        h.proc.kill()
        h.proc.wait()


@pytest.fixture(scope="session")
def realhub():
    """The real AgentCom hub at REALHUB_URL (tests marked `realhub`); skipped when it is unset."""
    url = os.environ.get("REALHUB_URL")
    if not url:
        pytest.skip("REALHUB_URL is not set: no real AgentCom hub to test against")
    from realhub import RealHub

    real = RealHub(url)
    yield real
    real.close()


@pytest.fixture
def hub_factory(tmp_path: Path):
    started: list[RunningHub] = []

    def make(*args: str) -> RunningHub:
        sub = tmp_path / f"hub{len(started)}"
        sub.mkdir()
        h = RunningHub(sub, *args)
        started.append(h)
        return h

    yield make
    for h in started:
        if h.proc and h.proc.poll() is None:
            h.proc.kill()
            h.proc.wait()


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agentcom_skill", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def run_json(*args: str, env: dict[str, str]) -> dict[str, Any]:
    out = run_cli(*args, "--json", env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for localhost and 127.0.0.1, made with openssl (the test skips
    when openssl is not installed)."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a certificate for a TLS server")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@functools.lru_cache(maxsize=1)
def gzip_bomb(total: int = 1 << 30) -> bytes:
    """`total` zero bytes as one valid gzip member of about 1 MB, made without compressing a
    gigabyte: after a full flush deflate restarts, so the block for one MiB of zeros repeats."""
    mib = b"\0" * (1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert again == block
    crc = 0
    for _ in range(total >> 20):
        crc = zlib.crc32(mib, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    trailer = struct.pack("<II", crc, total & 0xFFFFFFFF)
    return header + block * (total >> 20) + deflate.flush() + trailer
