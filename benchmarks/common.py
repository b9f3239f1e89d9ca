"""Shared pieces of the benchmark scripts: a local hub in a temporary folder, the labelled
trace (both from the tests' `hubprocess` helper), and medians."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hubprocess import SHARED, RunningHub, agent_env, load_trace  # noqa: E402,F401 - re-exported


class LocalHub(RunningHub):
    """`agentcom hub serve` in a temporary folder, stopped and removed on exit."""

    def __init__(self, *args: str):
        self._tmp = tempfile.TemporaryDirectory(prefix="agentcom-bench-")
        self.dir = Path(self._tmp.name)
        super().__init__(self.dir, *args)

    def __enter__(self) -> "LocalHub":
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
