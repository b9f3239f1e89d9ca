"""Shared pieces of the benchmark scripts: a local hub in a temporary folder, the labelled
trace (both from the tests' `hubprocess` helper), the baselines beside this file, and medians."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from hubprocess import RunningHub, agent_env, load_trace  # noqa: E402,F401 - re-exported

# The minimal pollers agentcom is measured against (one GET of the mailbox, one line printed).
POLL_MIN_PY = HERE / "poll_min.py"  # Python, standard library only
POLL_MIN_REQUESTS = HERE / "poll_min_requests.py"  # Python on requests: the floor for agentcom's own stack
POLL_MIN_JS = HERE / "poll_min.js"  # Node.js

# `agentcom` as people run it: the console script installed beside this Python (no runpy).
_SCRIPT = Path(sys.executable).parent / "agentcom"
AGENTCOM = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "agentcom_skill"]


class LocalHub(RunningHub):
    """`agentcom hub serve` in a temporary folder, stopped and removed on exit."""

    def __init__(self, *args: str):
        self._tmp = tempfile.TemporaryDirectory(prefix="agentcom-bench-")
        self.dir = Path(self._tmp.name)
        super().__init__(self.dir, *args)

    def __enter__(self) -> LocalHub:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self._tmp.cleanup()

    def env(self, agent: str, token: str, **extra: str) -> dict[str, str]:
        return agent_env(self, agent, token, self.dir, **extra)


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (KiB) of one child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd} failed: {proc.stderr.read().decode()}")
    proc.stderr.close()
    proc.returncode = 0
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss
