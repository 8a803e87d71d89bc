"""The deterministic report: the strongest hypothesis of the rules, its supporting evidence,
recommended actions and related resources."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from agents.rca.bundle import metadata_of, ref_of, validate_bundle
from agents.rca.placement import event_hypotheses, node_hypotheses
from agents.rca.rules import Case, container_hypotheses, workload_hypotheses
from agents.rca.schema import PLAYBOOKS
from agents.rca.vocabulary import BY_NAME


def as_of(bundle: Mapping[str, Any]) -> datetime:
    """The moment the bundle describes: its `collected_at` (a saved bundle is judged as of when it
    was read, so ages and "recent" mean the same later), else now."""
    from k8s.detectors import parse_time

    collected = parse_time(bundle.get("collected_at")) if isinstance(bundle.get("collected_at"), str) else None
    if collected is not None and collected.tzinfo is None:
        collected = collected.replace(tzinfo=UTC)
    return collected or datetime.now(UTC)


def _findings(bundle: Mapping[str, Any], now: datetime) -> list[Any]:
    from k8s.detectors import detect

    def one(key: str) -> list[Any]:
        return [bundle[key]] if bundle.get(key) else []

    return detect(one("pod"), one("node"), one("deployment"), bundle.get("replicasets") or [], one("hpa"), one("job"), now=now)


def _recommendations(failure_class: str, bundle: Mapping[str, Any], evidence: list[dict[str, Any]]) -> list[dict[str, Any]]:
    deployment = ref_of("Deployment", bundle.get("deployment")) if bundle.get("deployment") else "the workload"
    node = metadata_of(bundle.get("node")).get("name") or ((bundle.get("pod") or {}).get("spec") or {}).get("nodeName") or "the node"
    actions = [{"action": BY_NAME[failure_class].action.format(workload=deployment, node=node), "playbook": PLAYBOOKS.get(failure_class)}]
    if failure_class == "app_crash" and bundle.get("deployment"):
        actions.append({"action": f"Roll back {deployment} if the crash started with its latest revision", "playbook": "deployment_rollback"})
    return actions


def _related(bundle: Mapping[str, Any]) -> list[str]:
    refs = []
    for key, kind in (("pod", "Pod"), ("deployment", "Deployment"), ("job", "Job"), ("hpa", "HorizontalPodAutoscaler"), ("node", "Node")):
        if bundle.get(key):
            refs.append(ref_of(kind, bundle[key]))
    pod_node = ((bundle.get("pod") or {}).get("spec") or {}).get("nodeName")
    if pod_node and f"Node/{pod_node}" not in refs:
        refs.append(f"Node/{pod_node}")
    for rs in bundle.get("replicasets") or []:
        refs.append(ref_of("ReplicaSet", rs))
    for item in bundle.get("related") or []:
        if isinstance(item, Mapping):
            label = item.get("ref") or item.get("alertname") or item.get("workload") or item.get("name")
            if label:
                refs.append(str(label))
        elif isinstance(item, str):
            refs.append(item)
    return list(dict.fromkeys(refs))


def deterministic_report(bundle: Mapping[str, Any]) -> dict[str, Any]:
    validate_bundle(bundle)
    case = Case()
    now = as_of(bundle)
    findings = _findings(bundle, now)
    node_hypotheses(case, bundle)
    container_hypotheses(case, bundle, findings, now)
    event_hypotheses(case, bundle)
    workload_hypotheses(case, bundle, findings, now)
    confidence, failure_class, root_cause, evidence = case.best()
    # Supporting evidence: everything else that points to the same class.
    for _confidence, other_class, _, other_evidence in sorted(case.hypotheses, key=lambda h: -h[0]):
        if other_class == failure_class:
            for item in other_evidence:
                if item not in evidence:
                    evidence.append(item)
    if failure_class == "unknown":
        root_cause = root_cause or "No known failure signature in the pod status, events or logs"
        evidence = [*evidence, *({"source": "status", "detail": f.message} for f in findings)] or [
            {"source": "status", "detail": "no failing container state, event or log pattern found"}
        ]
    return {
        "root_cause": root_cause,
        "failure_class": failure_class,
        "confidence": round(min(confidence + 0.05 * (len(evidence) - 1), 0.99) if failure_class != "unknown" else confidence, 2),
        "evidence": evidence[:12],
        "recommended_actions": _recommendations(failure_class, bundle, evidence),
        "related_resources": _related(bundle),
        "method": "deterministic",
        "finding_types": sorted({f.type for f in findings}),
    }



EXCERPT_BEFORE = 3
EXCERPT_AFTER = 2
_LOG_OF_SOURCE = {"log": "logs", "previous_log": "previous_logs"}


def with_log_excerpts(report: dict[str, Any], bundle: Mapping[str, Any]) -> dict[str, Any]:
    """Each log evidence with a line number gets the lines around it (secrets redacted), so
    people see the line in its context: `excerpt: {first: N, lines: [...]}`."""
    from agents.redaction import redact_secrets

    for item in report.get("evidence") or []:
        if not isinstance(item, dict) or not isinstance(item.get("line"), int) or "excerpt" in item:
            continue
        text = bundle.get(_LOG_OF_SOURCE.get(str(item.get("source")), ""))
        lines = text.splitlines() if isinstance(text, str) else []
        if not 1 <= item["line"] <= len(lines):
            continue
        first = max(item["line"] - EXCERPT_BEFORE, 1)
        last = min(item["line"] + EXCERPT_AFTER, len(lines))
        item["excerpt"] = {"first": first, "lines": [redact_secrets(line[:400]) for line in lines[first - 1 : last]]}
    return report
