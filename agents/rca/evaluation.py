"""Scoring the detectors and the RCA on the evaluation corpus (tests/evals/cases, `manage.py eval`).

A case is one JSON file: `id`, `title`, `source` ({url, why}: the public report it was rebuilt
from), `runtime`, `expected` ({findings: [finding types], failure_class, notes?}), `bundle`
(what `manage.py rca` takes) and optional `batch` (cases added together; default 1). A case is *healthy* when it expects no finding and `unknown`.

`score(cases)` runs the detectors and the RCA on every bundle (each judged as of its
`collected_at`) and returns plain data: per-class precision and recall, the confusion matrix,
overall accuracy, findings right per case, findings on healthy cases, the misses with why, and
the calibration of confidence. `THRESHOLDS` are what the test suite holds the deterministic mode to.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agents.rca.schema import FAILURE_CLASSES

CONFIDENT = 0.8
THRESHOLDS = {
    "accuracy": 0.90,  # overall, every case
    "class_recall": 0.80,  # for each class with at least `class_min_cases` cases
    "class_min_cases": 4,
    "healthy_findings": 0,  # findings on healthy cases
    "confident_precision": 0.95,  # answers with confidence >= CONFIDENT that are right
}
_CASE_KEYS = {"id", "title", "source", "runtime", "expected", "bundle"}


class CaseError(ValueError):
    """A case file is malformed; the message names the file and the field."""


def load_cases(directory: str | Path) -> list[dict[str, Any]]:
    folder = Path(directory)
    if not folder.is_dir():
        raise CaseError(f"{folder}: no such directory")
    cases = []
    for path in sorted(folder.glob("*.json")):
        try:
            case = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CaseError(f"{path.name}: not JSON ({exc.msg} at line {exc.lineno})") from None
        missing = _CASE_KEYS - set(case) if isinstance(case, dict) else _CASE_KEYS
        if missing:
            raise CaseError(f"{path.name}: missing {', '.join(sorted(missing))}")
        expected = case["expected"]
        if not isinstance(expected, dict) or expected.get("failure_class") not in FAILURE_CLASSES:
            raise CaseError(f"{path.name}: expected.failure_class must be one of {', '.join(FAILURE_CLASSES)}")
        if not isinstance(expected.get("findings"), list):
            raise CaseError(f"{path.name}: expected.findings must be a list of finding types")
        if not str((case.get("source") or {}).get("url") or "").startswith("http"):
            raise CaseError(f"{path.name}: source.url must be the public report the case was rebuilt from")
        case["_file"] = path.name
        cases.append(case)
    if not cases:
        raise CaseError(f"{folder}: no *.json cases")
    ids = Counter(c["id"] for c in cases)
    duplicated = [i for i, n in ids.items() if n > 1]
    if duplicated:
        raise CaseError(f"duplicate case ids: {', '.join(duplicated)}")
    return cases


def is_healthy(case: Mapping[str, Any]) -> bool:
    return not case["expected"]["findings"] and case["expected"]["failure_class"] == "unknown"


def run_case(case: Mapping[str, Any], *, use_llm: bool = False) -> dict[str, Any]:
    from agents.rca import analyze, deterministic_report

    bundle = copy.deepcopy(case["bundle"])
    report = analyze(bundle, use_llm=True) if use_llm else deterministic_report(bundle)
    return report


def score(cases: Iterable[Mapping[str, Any]], *, use_llm: bool = False) -> dict[str, Any]:
    rows = []
    for case in cases:
        report = run_case(case, use_llm=use_llm)
        expected = case["expected"]
        found = sorted(set(report.get("finding_types") or []))
        want = sorted(set(expected["findings"]))
        got = report["failure_class"]
        row = {
            "id": case["id"],
            "expected_class": expected["failure_class"],
            "class": got,
            "confidence": float(report.get("confidence") or 0),
            "class_right": got == expected["failure_class"],
            "expected_findings": want,
            "findings": found,
            "findings_right": found == want,
            "healthy": is_healthy(case),
            "method": report.get("method"),
            "root_cause": report.get("root_cause", ""),
            "source": case["source"]["url"],
            "batch": int(case.get("batch") or 1),
        }
        if report.get("fallback"):
            row["fallback"] = report["fallback"]["reason"]
        rows.append(row)
    return summarize(rows, mode="llm" if use_llm else "deterministic")


def summarize(rows: list[dict[str, Any]], *, mode: str) -> dict[str, Any]:
    total = len(rows)
    classes = [c for c in FAILURE_CLASSES if any(r["expected_class"] == c or r["class"] == c for r in rows)]
    confusion = {c: {d: 0 for d in classes} for c in classes}
    for row in rows:
        confusion[row["expected_class"]][row["class"]] += 1
    per_class = {}
    for cls in classes:
        support = sum(confusion[cls].values())
        predicted = sum(confusion[e][cls] for e in classes)
        right = confusion[cls][cls]
        per_class[cls] = {
            "cases": support,
            "predicted": predicted,
            "precision": round(right / predicted, 3) if predicted else None,
            "recall": round(right / support, 3) if support else None,
        }
    failing = [r for r in rows if not r["healthy"]]
    confident = [r for r in rows if r["confidence"] >= CONFIDENT and r["class"] != "unknown"]
    bins = []
    for low, high in ((0.0, 0.5), (0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01)):
        inside = [r for r in rows if low <= r["confidence"] < high]
        bins.append({"confidence": f"[{low:.1f}, {min(high, 1.0):.1f}{']' if high > 1 else ')'}", "answers": len(inside),
                     "right": sum(r["class_right"] for r in inside)})
    healthy = [r for r in rows if r["healthy"]]
    misses = []
    for row in rows:
        reasons = []
        if not row["class_right"]:
            reasons.append(f"class {row['class']} ({row['confidence']:.2f}), expected {row['expected_class']}: {row['root_cause'][:200]}")
        if not row["findings_right"]:
            missing = sorted(set(row["expected_findings"]) - set(row["findings"]))
            extra = sorted(set(row["findings"]) - set(row["expected_findings"]))
            reasons.append("findings " + "; ".join(filter(None, [f"missing {', '.join(missing)}" if missing else "",
                                                                  f"unexpected {', '.join(extra)}" if extra else ""])))
        if reasons:
            misses.append({"id": row["id"], "reasons": reasons, "source": row["source"]})
    result = {
        "mode": mode,
        "cases": total,
        "healthy_cases": len(healthy),
        "accuracy": round(sum(r["class_right"] for r in rows) / total, 3) if total else None,
        "accuracy_failing_cases": round(sum(r["class_right"] for r in failing) / len(failing), 3) if failing else None,
        "findings_accuracy": round(sum(r["findings_right"] for r in rows) / total, 3) if total else None,
        "healthy_with_findings": [r["id"] for r in healthy if r["findings"]],
        "per_class": per_class,
        "confusion": confusion,
        "calibration": {
            "threshold": CONFIDENT,
            "confident_answers": len(confident),
            "confident_right": sum(r["class_right"] for r in confident),
            "confident_precision": round(sum(r["class_right"] for r in confident) / len(confident), 3) if confident else None,
            "bins": bins,
        },
        "misses": misses,
        # The LLM modes: how many answers were the model's, and why the others fell back to the rules.
        "llm_answers": sum(1 for r in rows if r["method"] not in (None, "deterministic")),
        "fallbacks": dict(sorted(Counter(r["fallback"] for r in rows if r.get("fallback")).items())),
        "rows": rows,
    }
    # Cases are added in batches; a batch written after the rules it is scored by were last changed
    # is the held-out measure (the first score of each batch is recorded in docs/benchmarks.md).
    result["by_batch"] = {
        str(batch): {"cases": len(members), "accuracy": round(sum(r["class_right"] for r in members) / len(members), 3)}
        for batch in sorted({r["batch"] for r in rows}) for members in [[r for r in rows if r["batch"] == batch]]
    }
    result["failures"] = threshold_failures(result)
    return result


def threshold_failures(result: Mapping[str, Any]) -> list[str]:
    """Why the result falls short of THRESHOLDS (empty when it meets them)."""
    failures = []
    if (result["accuracy"] or 0) < THRESHOLDS["accuracy"]:
        failures.append(f"accuracy {result['accuracy']:.1%} < {THRESHOLDS['accuracy']:.0%}")
    for cls, stats in result["per_class"].items():
        if stats["cases"] >= THRESHOLDS["class_min_cases"] and (stats["recall"] or 0) < THRESHOLDS["class_recall"]:
            failures.append(f"{cls}: recall {stats['recall']:.1%} < {THRESHOLDS['class_recall']:.0%} on {stats['cases']} cases")
    if len(result["healthy_with_findings"]) > THRESHOLDS["healthy_findings"]:
        failures.append(f"findings on healthy cases: {', '.join(result['healthy_with_findings'])}")
    precision = result["calibration"]["confident_precision"]
    if precision is not None and precision < THRESHOLDS["confident_precision"]:
        failures.append(f"answers with confidence >= {CONFIDENT} right {precision:.1%} < {THRESHOLDS['confident_precision']:.0%}")
    return failures


def render(result: Mapping[str, Any]) -> str:
    """The result as text tables for a person."""
    lines = [f"RCA evaluation ({result['mode']}): {result['cases']} cases, {result['healthy_cases']} healthy", ""]
    lines.append(f"accuracy                {result['accuracy']:.1%}  (failing cases only: {result['accuracy_failing_cases']:.1%})")
    lines.append(f"findings right          {result['findings_accuracy']:.1%}")
    if result["mode"] != "deterministic":
        fallbacks = ", ".join(f"{n} {reason}" for reason, n in result["fallbacks"].items())
        lines.append(f"the model's answers     {result['llm_answers']} of {result['cases']}" + (f" (fallbacks: {fallbacks})" if fallbacks else ""))
    if len(result["by_batch"]) > 1:
        lines.append("by batch                " + ", ".join(f"{b}: {v['accuracy']:.1%} of {v['cases']}" for b, v in result["by_batch"].items()))
    lines.append(f"healthy with a finding  {len(result['healthy_with_findings'])}" + (f"  ({', '.join(result['healthy_with_findings'])})" if result["healthy_with_findings"] else ""))
    cal = result["calibration"]
    if cal["confident_precision"] is not None:
        lines.append(f"confidence >= {cal['threshold']}      {cal['confident_right']}/{cal['confident_answers']} right ({cal['confident_precision']:.1%})")
    lines += ["", f"{'class':<20} {'cases':>5} {'precision':>9} {'recall':>7}"]
    for cls, stats in result["per_class"].items():
        p = "-" if stats["precision"] is None else f"{stats['precision']:.0%}"
        r = "-" if stats["recall"] is None else f"{stats['recall']:.0%}"
        lines.append(f"{cls:<20} {stats['cases']:>5} {p:>9} {r:>7}")
    classes = list(result["confusion"])
    short = {c: c[:6] for c in classes}
    lines += ["", "confusion (rows: expected, columns: answered)", " " * 20 + " ".join(f"{short[c]:>6}" for c in classes)]
    for cls in classes:
        lines.append(f"{cls:<20}" + " ".join(f"{result['confusion'][cls][c] or '.':>6}" for c in classes))
    lines += ["", "calibration"] + [f"  {b['confidence']:<12} {b['right']}/{b['answers']} right" for b in cal["bins"] if b["answers"]]
    if result["misses"]:
        lines += ["", f"misses ({len(result['misses'])})"]
        for miss in result["misses"]:
            lines.append(f"  {miss['id']}")
            lines += [f"      {reason}" for reason in miss["reasons"]]
    lines += ["", "thresholds: " + ("met" if not result["failures"] else "NOT met: " + "; ".join(result["failures"]))]
    return "\n".join(lines)
