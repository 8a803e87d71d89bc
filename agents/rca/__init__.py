"""Root-cause analysis: a report on why a workload (or node) fails, from a context bundle.

A bundle is JSON: `pod` (as the API returns it; optional when `node`, `deployment` or `job` is
given), `events` (Event objects, old `firstTimestamp`/`count` and new `eventTime`/`series`
shapes), `logs` and `previous_logs` (strings), and optional `node`, `deployment`,
`replicasets`, `job`, `hpa`, `related` (other incidents and alerts, given by the caller).
`gather_bundle(cluster, workload)` builds one from a live cluster; `manage.py rca FILE.json`
analyses one from a file.

`analyze(bundle)` always answers. The deterministic report (detectors, container states,
events, log patterns) is computed first; with an LLM configured the model is asked for a JSON
report validated against REPORT_SCHEMA, invalid output is sent back for one repair, and when
it is still invalid or the provider fails the deterministic report is returned with
`method: "deterministic"` and a `fallback` saying why.

The package, along its seams: `bundle` (fields, validation, events), `gather` (a bundle from a
cluster), `rules` (hypotheses per failure class), `report` (the deterministic report), `schema`
(the vocabulary and the report's JSON schema), `llm_report` (the LLM path and `analyze`).
"""

from agents.rca.bundle import BUNDLE_FIELDS, BundleError, normalized_events, validate_bundle
from agents.rca.gather import gather_bundle
from agents.rca.llm_input import RCA_PROMPT
from agents.rca.llm_report import analyze
from agents.rca.report import deterministic_report
from agents.rca.schema import (
    EVIDENCE_SOURCES,
    FAILURE_CLASS_MEANINGS,
    FAILURE_CLASSES,
    PLAYBOOKS,
    REPORT_SCHEMA,
    ReportInvalid,
    parse_report,
)

__all__ = [
    "BUNDLE_FIELDS",
    "EVIDENCE_SOURCES",
    "FAILURE_CLASSES",
    "FAILURE_CLASS_MEANINGS",
    "PLAYBOOKS",
    "RCA_PROMPT",
    "REPORT_SCHEMA",
    "BundleError",
    "ReportInvalid",
    "analyze",
    "deterministic_report",
    "gather_bundle",
    "normalized_events",
    "parse_report",
    "validate_bundle",
]
