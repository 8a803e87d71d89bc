"""The evaluation corpus (tests/evals/cases): the deterministic detectors and RCA meet the thresholds
of agents.rca.evaluation.THRESHOLDS on cases rebuilt from public failure reports."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from agents.rca.evaluation import THRESHOLDS, load_cases, score

CASES = Path(__file__).parent / "cases"


def _run_eval(*args: str) -> tuple[str, dict]:
    out = io.StringIO()
    call_command("eval", "--json", "--no-fail", *args, stdout=out)
    text = out.getvalue().rstrip("\n")
    return text, json.loads(text.splitlines()[-1])


def test_the_corpus_is_large_sourced_and_covers_every_class() -> None:
    from agents.rca import FAILURE_CLASSES
    from k8s.detectors import FINDING_TYPES

    cases = load_cases(CASES)
    assert len(cases) >= 80
    assert sum(1 for c in cases if not c["expected"]["findings"] and c["expected"]["failure_class"] == "unknown") >= 12
    assert {c["expected"]["failure_class"] for c in cases} == set(FAILURE_CLASSES)
    # cluster_unreachable comes from a failed poll, never from a bundle.
    assert {t for c in cases for t in c["expected"]["findings"]} == FINDING_TYPES - {"cluster_unreachable"}
    assert all(c["source"]["url"].startswith("https://") and c["source"]["why"] for c in cases)
    assert len({c["runtime"] for c in cases}) >= 8


def test_the_deterministic_mode_meets_the_thresholds() -> None:
    text, result = _run_eval()
    assert "accuracy" in text and "confusion" in text  # the tables come before the JSON line
    assert result["cases"] >= 80
    assert result["failures"] == [], "\n".join(result["failures"]) + "\n" + text
    assert result["accuracy"] >= THRESHOLDS["accuracy"]
    assert result["healthy_with_findings"] == []


def test_a_regression_is_caught(tmp_path: Path) -> None:
    """The scorer is no rubber stamp: relabel a case wrongly and it counts a miss and fails."""
    cases = load_cases(CASES)
    wrong = next(c for c in cases if c["expected"]["failure_class"] == "oom_killed")
    wrong["expected"]["failure_class"] = "permission_error"
    one = score([wrong])
    assert one["accuracy"] == 0.0 and one["misses"][0]["id"] == wrong["id"]
    assert one["failures"]
    (tmp_path / "case.json").write_text(json.dumps({k: v for k, v in wrong.items() if k != "_file"}))
    with pytest.raises(CommandError, match="thresholds not met"):
        call_command("eval", "--cases", str(tmp_path), stdout=io.StringIO())


def test_a_malformed_case_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(json.dumps({"id": "x", "title": "t", "source": {"url": "https://example.org"}, "runtime": "go",
                                                   "expected": {"findings": [], "failure_class": "gremlins"}, "bundle": {}}))
    with pytest.raises(CommandError, match="bad.json: expected.failure_class"):
        call_command("eval", "--cases", str(tmp_path), stdout=io.StringIO())


def test_manage_rca_takes_a_case_file() -> None:
    out = io.StringIO()
    call_command("rca", str(CASES / "oom-loop-after-exec.json"), "--no-llm", "--compact", stdout=out)
    assert json.loads(out.getvalue())["failure_class"] == "oom_killed"


def test_the_readme_holds_the_vocabulary_from_code() -> None:
    from agents.rca import FAILURE_CLASSES
    from agents.rca.vocabulary import VOCABULARY, vocabulary_markdown

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start, end = "<!-- failure-classes:start -->\n", "\n<!-- failure-classes:end -->"
    assert start in readme and end in readme
    table = readme.split(start, 1)[1].split(end, 1)[0]
    assert table == vocabulary_markdown(), "README table differs from agents/rca/vocabulary.py: run manage.py eval --vocabulary"
    assert [entry.name for entry in VOCABULARY] == list(FAILURE_CLASSES)
    assert all(entry.meaning and entry.evidence and entry.action for entry in VOCABULARY)
    out = io.StringIO()
    call_command("eval", "--vocabulary", stdout=out)
    assert out.getvalue().strip() == vocabulary_markdown()


def test_gathering_reads_the_init_container_a_pod_is_stuck_in() -> None:
    from agents.rca.gather import _container_to_read

    stuck = json.loads((CASES / "dep-init-wait-for-mysql.json").read_text())["bundle"]["pod"]
    assert _container_to_read(stuck) == ("wait-mysql", False)
    crashing = json.loads((CASES / "perm-rbac-init-list-pods.json").read_text())["bundle"]["pod"]
    assert _container_to_read(crashing) == ("pod-dependency-init", True)
    finished = json.loads((CASES / "ok-init-done-app-running.json").read_text())["bundle"]["pod"]
    assert _container_to_read(finished) == ("myapp-container", False)
