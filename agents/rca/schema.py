"""The RCA report's schema: failure classes (from agents.rca.vocabulary), evidence sources, playbooks,
and the validation of a report (an LLM's answer is parsed and checked here)."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

from agents.rca.vocabulary import VOCABULARY

FAILURE_CLASSES = tuple(entry.name for entry in VOCABULARY)
FAILURE_CLASS_MEANINGS = {entry.name: entry.meaning for entry in VOCABULARY}
# Where a fact in the bundle comes from; "tool" (with "ref": the label of a tool result) only in an
# investigation (agents/rca/investigate.py), where the report cites what a tool call returned.
BUNDLE_SOURCES = ("status", "event", "log", "previous_log", "node", "deployment", "replicaset", "job", "hpa", "spec", "related")
EVIDENCE_SOURCES = (*BUNDLE_SOURCES, "tool")
# Our built-in playbooks (the engine's library), named in recommendations where one fits.
PLAYBOOKS = {entry.name: entry.playbook for entry in VOCABULARY if entry.playbook}

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
                    "ref": {"type": "string", "description": "with source tool: the label of the tool result, e.g. T1"},
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
