"""The RCA report's vocabulary and schema: failure classes, evidence sources, playbooks, and
the validation of a report (an LLM's answer is parsed and checked here)."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

FAILURE_CLASSES = (
    "oom_killed",
    "app_crash",
    "config_error",
    "dependency_failure",
    "image_pull_error",
    "resource_exhaustion",
    "node_failure",
    "probe_failure",
    "permission_error",
    "bad_rollout",
    "unknown",
)
FAILURE_CLASS_MEANINGS = {
    "oom_killed": "the container is killed for exceeding its memory limit, or the runtime runs out of memory",
    "app_crash": "the program exits with an error of its own (a bug, an unhandled exception, a panic)",
    "config_error": "missing env var, ConfigMap, Secret or file; bad arguments; wrong image architecture",
    "dependency_failure": "a database or service it needs is unreachable, DNS fails",
    "image_pull_error": "the image cannot be pulled (wrong name or tag, no credentials, registry down)",
    "resource_exhaustion": "unschedulable for lack of CPU/memory, disk full, quota, an autoscaler at its maximum",
    "node_failure": "the node is NotReady or under pressure",
    "probe_failure": "liveness/readiness probes fail while the process runs",
    "permission_error": "RBAC denies an API call, or filesystem permissions",
    "bad_rollout": "a new revision fails where the previous one worked",
    "unknown": "the evidence does not say",
}
EVIDENCE_SOURCES = ("status", "event", "log", "previous_log", "node", "deployment", "replicaset", "job", "hpa", "spec", "related")
# Our built-in playbooks (the engine's library), named in recommendations where one fits.
PLAYBOOKS = {
    "oom_killed": "oom_kill_remediation",
    "app_crash": "crash_loop_remediation",
    "bad_rollout": "deployment_rollback",
    "image_pull_error": "deployment_rollback",
    "node_failure": "node_not_ready_remediation",
    "resource_exhaustion": "scale_up_on_load",
}

REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "root_cause": {"type": "string", "minLength": 10},
        "failure_class": {"type": "string", "enum": list(FAILURE_CLASSES)},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "evidence": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "source": {"type": "string", "enum": list(EVIDENCE_SOURCES)},
                    "detail": {"type": "string", "minLength": 1},
                    "field": {"type": "string"},
                    "line": {"type": "integer", "minimum": 1},
                },
                "required": ["source", "detail"],
            },
        },
        "recommended_actions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"action": {"type": "string", "minLength": 1}, "playbook": {"type": ["string", "null"]}},
                "required": ["action"],
            },
        },
        "related_resources": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["root_cause", "failure_class", "confidence", "evidence", "recommended_actions", "related_resources"],
}


class ReportInvalid(ValueError):
    pass


def parse_report(content: str) -> dict[str, Any]:
    text = content.strip()
    if text.startswith("```"):  # models like to fence JSON even in JSON mode
        text = re.sub(r"^```(?:json)?\s*|\s*```$", "", text)
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportInvalid(f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    try:
        jsonschema.validate(report, REPORT_SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ReportInvalid(f"{where}: {exc.message}") from None
    return report
