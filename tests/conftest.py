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
        "hub_pool",  # conftest: the hub fixture's next hub, started ahead
        "hub_factory",  # conftest: hubs on demand
        "realhub",  # conftest: the real hub over the network
        "limited_hub",  # test_hub_wire: a hub with rate limits
        "standin",  # test_a2a: the A2A stand-in process
        "forward_proxy",  # test_client: a proxy process
        "openclaw",  # test_openclaw: the real OpenClaw
    }
)
SLOW_MARKERS = ("slow", "openclaw", "realhub")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """The `fast` marker (above), and the order: the OpenClaw gateway takes 10-50 s to start, in
    a thread: the test that starts it (and needs only OpenClaw's own CLI) runs first and the tests
    that need the gateway run last, so the start goes on while the rest of the suite runs."""
    for item in items:
        slow = any(item.get_closest_marker(name) for name in SLOW_MARKERS)
        if not slow and PROCESS_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.fast)
    first = [i for i in items if "started" in i.fixturenames and "world" not in i.fixturenames]  # type: ignore[attr-defined]
    last = [i for i in items if "world" in i.fixturenames]  # type: ignore[attr-defined]
    ordered = {id(i) for i in first + last}
    items[:] = first + [i for i in items if id(i) not in ordered] + last


# The real-OpenClaw tests spend their time waiting for OpenClaw (a Node gateway's start, its turns):
# when a run selects them beside other tests, they run in a pytest process of their own, started
# once collection is done, while this one runs the rest; `test_openclaw_beside.py` waits for it
# at the end and fails with its output if it failed. (AGENTCOM_TEST_OPENCLAW=here keeps them in
# this process; the child has it set.)
OPENCLAW_HERE = "AGENTCOM_TEST_OPENCLAW"
BESIDE_WAITER = "tests/test_openclaw_beside.py"


class OpenClawBeside:
    def __init__(self, config: pytest.Config, node_ids: list[str]):
        base = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
        self.output = base / "openclaw-beside.log"
        self.count = len(node_ids)
        with open(self.output, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts="]
                + ["--basetemp", str(base / "openclaw-beside"), *node_ids],
                cwd=str(config.rootpath),
                env={**os.environ, OPENCLAW_HERE: "here"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait(self) -> tuple[int, str]:
        code = self.proc.wait()
        return code, self.output.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if os.environ.get(OPENCLAW_HERE) or config.option.collectonly:
        return
    openclaw, waiting, rest = [], [], []
    for item in session.items:
        if item.get_closest_marker("openclaw"):
            openclaw.append(item)
        elif item.nodeid.startswith(BESIDE_WAITER):
            waiting.append(item)
        else:
            rest.append(item)
    # Only with its waiter selected (else nobody would report the child's result) and other
    # tests to run beside it.
    if openclaw and waiting and rest:
        config.stash[BESIDE] = OpenClawBeside(config, [i.nodeid for i in openclaw])
        session.items[:] = rest + waiting


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    beside = config.stash.get(BESIDE, None)
    if beside is not None and beside.proc.poll() is not None:
        lines = beside.output.read_text(errors="replace").strip().splitlines() or ["(no output)"]
        terminalreporter.write_line(f"the OpenClaw tests, in a process of their own: {lines[-1].strip('= ')}")


def pytest_unconfigure(config: pytest.Config) -> None:
    beside = config.stash.get(BESIDE, None)
    if beside is not None:
        beside.stop()  # an interrupted run leaves no OpenClaw behind


BESIDE = pytest.StashKey[OpenClawBeside]()


class StartsAProcess(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _no_process_in_fast_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test marked `fast` may start no process and serve no socket (a port found free and a
    connection refused are fine). Checked on the thread that runs the test: the hub pool's thread
    starts the next hub meanwhile. Not with AGENTCOM_TEST_CLI=subprocess, where every CLI run is
    a process on purpose."""
    if request.node.get_closest_marker("fast") is None or CLI_IN_SUBPROCESS:
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


class HubPool:
    """The `hub` fixture's hubs, each started while the test before it runs: starting one (a
    Python process that imports the server, then answers /health) is most of a short test's
    setup, and hundreds of tests take one."""

    def __init__(self, root: Path):
        from concurrent.futures import ThreadPoolExecutor

        self.root, self.started = root, 0
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-pool")
        self.next: Any = None

    def _start(self) -> Any:
        self.started += 1
        folder = self.root / f"hub{self.started}"
        folder.mkdir()
        return self.executor.submit(RunningHub, folder)

    def take(self) -> RunningHub:
        current = self.next or self._start()
        self.next = self._start()
        return current.result()

    def close(self) -> None:
        if self.next is not None:
            stop_hard(self.next.result())
        self.executor.shutdown()


def stop_hard(h: RunningHub) -> None:
    if h.proc and h.proc.poll() is None:
        h.proc.kill()
        h.proc.wait()


@pytest.fixture(scope="session")
def hub_pool(tmp_path_factory: pytest.TempPathFactory):
    pool = HubPool(tmp_path_factory.mktemp("hubs"))
    yield pool
    pool.close()


@pytest.fixture
def hub(hub_pool: HubPool):
    h = hub_pool.take()
    yield h
    stop_hard(h)


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
        stop_hard(h)


# `run_cli` runs `agentcom` in this process (through click's CliRunner, with `env` as the whole
# environment): a new interpreter spends ~0.1 s importing before it does anything, and the suite
# runs agentcom over a thousand times, so that start-up was most of its time. A run made from
# another thread is a real process (tests of runs at once need separate processes: their locks),
# and so is one that changes how Python starts (PYTHON* variables) or that serves (watch, mcp,
# hub, demo); AGENTCOM_TEST_CLI=subprocess makes every run one, to check the suite both ways.
CLI_IN_SUBPROCESS = os.environ.get("AGENTCOM_TEST_CLI") == "subprocess"
SERVING_COMMANDS = {"watch", "mcp", "hub", "demo"}


def needs_a_process(args: tuple[str, ...], env: dict[str, str]) -> bool:
    import threading

    python = {k: v for k, v in env.items() if k.startswith("PYTHON")}
    return (
        CLI_IN_SUBPROCESS
        or threading.current_thread() is not threading.main_thread()
        or python != {k: v for k, v in os.environ.items() if k.startswith("PYTHON")}
        or bool(SERVING_COMMANDS.intersection(args))
    )


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    if needs_a_process(args, env):
        return subprocess.run(
            [sys.executable, "-m", "agentcom_skill", *args], env=env, capture_output=True, text=True, timeout=timeout
        )
    return run_cli_here(list(args), env, timeout)


def run_cli_here(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    import faulthandler
    import logging

    from click.testing import CliRunner

    from agentcom_skill.cli import main

    unset: dict[str, str | None] = {name: None for name in os.environ if name not in env}
    # A run that hangs stops the suite with every thread's stack (a subprocess would time out).
    faulthandler.dump_traceback_later(timeout, exit=True)
    logger = logging.getLogger("agentcom")
    logger.propagate = False  # its warnings reach this run's stderr (logging's last resort), not pytest's
    try:
        result = CliRunner().invoke(main, args, env={**unset, **env}, prog_name="agentcom", catch_exceptions=False)
    finally:
        faulthandler.cancel_dump_traceback_later()
        for handler in list(logger.handlers):  # what -v added, bound to this run's stderr
            logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    return subprocess.CompletedProcess(["agentcom", *args], result.exit_code, result.stdout, result.stderr)


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
