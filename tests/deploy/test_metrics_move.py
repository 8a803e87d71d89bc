"""A metric that is defined but never moves is a bug: every metric in the inventory is named by a test.

Naming is the cheap half of the rule (the test that names a metric asserts that it moves; review
keeps it that way), but it is the half a machine can check: a new metric without any test fails
here, with the list of the untested ones.
"""

from __future__ import annotations

import re
from pathlib import Path

from aiops_site.metrics import inventory
from tests.conftest import ROOT

# Tests that list every metric by construction (the inventory, the dashboard and the alert rules
# against the code) name metrics without making them move, so they do not count.
NOT_EVIDENCE = {
    Path(__file__).resolve(),
    (ROOT / "tests" / "deploy" / "test_monitoring_config.py").resolve(),
}


def _named(family: str, text: str) -> bool:
    # The family or one of its samples (`_total`, `_count`, ...) as a whole word: a family whose
    # name is a prefix of another's (`aiops_x` and `aiops_x_seconds`) is not named by the longer one.
    return re.search(rf"\b{re.escape(family)}(?:_total|_created|_bucket|_count|_sum|_info)?\b", text) is not None


def test_every_metric_in_the_inventory_is_named_by_a_test() -> None:
    tests = [path for path in sorted((ROOT / "tests").rglob("test_*.py")) if path.resolve() not in NOT_EVIDENCE]
    assert tests, "no test files found under tests/"
    text = "\n".join(path.read_text(encoding="utf-8") for path in tests)
    rows = inventory()
    assert rows, "the inventory is empty: aiops_site.metrics.inventory() found no metric"
    untested = sorted(row["name"] for row in rows if not _named(row["family"], text))
    assert not untested, (
        f"{len(untested)} metric(s) are named by no test, so nothing checks that they move "
        "(a metric that never moves is a bug): " + ", ".join(untested) + ". "
        "Assert in the test of the behaviour that each one moves, e.g. compare "
        "prometheus_client.REGISTRY.get_sample_value(name, labels) before and after."
    )


def test_the_guard_sees_a_metric_no_test_names() -> None:
    assert _named("aiops_llm_retries", 'get_sample_value("aiops_llm_retries_total", {})')
    assert _named("aiops_chat_delivery_seconds", "aiops_chat_delivery_seconds_count")
    assert not _named("aiops_chat_delivery", "aiops_chat_delivery_seconds_count")
    assert not _named("aiops_watch_poll", "aiops_watch_polls_total")
