"""Waits for the real-OpenClaw tests when they ran in a pytest process of their own, beside the
rest of the suite (tests/conftest.py, `OpenClawBeside`), and fails with their output if they
failed."""

from __future__ import annotations

import pytest
from conftest import BESIDE

pytestmark = pytest.mark.slow  # it waits for minutes of OpenClaw: never in the fast loop


def test_the_openclaw_tests_run_beside_the_suite_passed(request: pytest.FixtureRequest) -> None:
    beside = request.config.stash.get(BESIDE, None)
    if beside is None:
        pytest.skip("the OpenClaw tests ran in this process, or were not selected")
    code, output = beside.wait()
    summary = output.strip().splitlines()[-1:] or ["(no output)"]
    print(f"{beside.count} OpenClaw tests in their own process: {summary[0]}")
    # pytest's 5: nothing collected (OpenClaw unavailable: each test skips with its reason)
    assert code == 0, f"the OpenClaw tests failed (exit {code}):\n{output[-6000:]}"
