"""The chaos suite's time budget in CI (issue 13: "bounded in time, run by `.ci/run`").

Each test is bounded by pytest-timeout (300 s, pyproject.toml; 420 s for the `make run` test); the suite as a whole by
AIOPS_CHAOS_BUDGET seconds (default 1500, 25 minutes, with AIOPS_CHAOS_REPEAT=1): once the chaos
tests have taken that long together, each one still to run fails at once, saying so -- never a
skip, so CI goes red instead of silently testing less. The whole chaos part of `make test` is
therefore done within the budget plus one test's timeout (32 minutes), however slow the machine:
14 tests took 18.5 minutes at load 15-25 on the 2-core build machine (docs/reliability.md).
A repeated run (AIOPS_CHAOS_REPEAT > 1, the 20 x 6 kill matrix) has no budget unless one is set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest


def _budget() -> float | None:
    if "AIOPS_CHAOS_BUDGET" in os.environ:
        value = float(os.environ["AIOPS_CHAOS_BUDGET"])
        return value if value > 0 else None
    return 1500.0 if int(os.environ.get("AIOPS_CHAOS_REPEAT", "1")) <= 1 else None


_spent = {"seconds": 0.0, "tests": 0}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: Any, nextitem: Any) -> Iterator[None]:
    if item.get_closest_marker("chaos") is None:
        yield
        return
    started = time.monotonic()
    yield
    _spent["seconds"] += time.monotonic() - started
    _spent["tests"] += 1


def pytest_runtest_setup(item: Any) -> None:
    budget = _budget()
    if item.get_closest_marker("chaos") is not None and budget is not None and _spent["seconds"] > budget:
        pytest.fail(f"the chaos suite's time budget is spent: {_spent['tests']} chaos tests took "
                    f"{_spent['seconds']:.0f} s, over AIOPS_CHAOS_BUDGET={budget:.0f} s; the machine is too slow "
                    f"or a test hangs (see their durations)", pytrace=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _spent["tests"]:
        budget = _budget()
        terminalreporter.write_line(
            f"chaos suite: {_spent['tests']} tests in {_spent['seconds']:.0f} s"
            + (f" (budget {budget:.0f} s, AIOPS_CHAOS_BUDGET)" if budget is not None else " (no budget)"))
