"""The LLM path: the model is asked for a report (validated against REPORT_SCHEMA, one repair),
and `analyze` falls back to the deterministic report when it fails, whatever the failure.

The LLM part has its own deadline (LLM_RCA_TIME_LIMIT, or the caller's, e.g. inside a playbook
step's time limit): a slow model costs at most that, and the incident still gets a report.
Structured output goes json_schema -> json_object -> the prompt alone, as the endpoint allows
(`llm.complete_json`); the report is validated in every case.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from agents import llm
from agents import metrics_llm as metrics
from agents.rca.investigate import INVESTIGATE_PROMPT, WRITE_NOW, Investigation
from agents.rca.llm_input import compact_facts, compact_prompt, full_prompt, llm_input
from agents.rca.report import deterministic_report, with_log_excerpts
from agents.rca.schema import PLAYBOOKS, REPORT_SCHEMA, ReportInvalid, parse_report
from agents.redaction import Redactor

log = structlog.get_logger(__name__)


class ReportTruncated(ReportInvalid):
    """The model's JSON was cut by max_tokens."""


def _checked(content: str, investigation: Investigation | None) -> dict[str, Any]:
    """The report in `content`, validated, its tool citations checked against the calls made."""
    report = parse_report(content)
    if investigation is not None:
        return investigation.cite(report)
    cited = [i for i, item in enumerate(report["evidence"]) if item.get("source") == "tool"]
    if cited:
        raise ReportInvalid(f"evidence/{cited[0]} cites a tool result, but no tool was called")
    return report


def _llm_report(bundle: Mapping[str, Any], deterministic: dict[str, Any], alias: str, deadline: float,
                context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    redactor = Redactor(resource_names=settings.LLM_REDACT_RESOURCE_NAMES)
    redactor.add_names_from(bundle)
    hint = f"{deterministic['failure_class']} ({deterministic['root_cause']})"
    if settings.LLM_RCA_PROMPT == "compact":
        facts = redactor.redact(compact_facts(bundle, hint))
        system = compact_prompt()
    else:
        facts = redactor.redact(json.dumps(llm_input(bundle), indent=1, default=str))
        system = full_prompt(redactor.redact(hint))
    investigation = Investigation.prepare(context, alias=alias, deadline=deadline, redactor=redactor)
    if investigation is not None:
        system += INVESTIGATE_PROMPT % {"rounds": settings.LLM_RCA_TOOL_ROUNDS}
    # Counted before the call: the placeholders have left with the request even if the call fails.
    metrics.REDACTIONS.labels("rca").inc(redactor.replaced)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": f"<untrusted_data source=\"bundle\">\n{facts}\n</untrusted_data>"},
    ]
    tokens = 0
    first_attempt = 0
    if investigation is not None:
        messages, last_text = investigation.run(messages)
        tokens += investigation.tokens
        try:  # the model may have written the report already, as its answer after the tools
            report = _checked(last_text, investigation)
        except ReportInvalid as exc:
            if last_text.lstrip().startswith(("{", "```")):  # a report, but not a valid one: its repair
                messages += [{"role": "assistant", "content": last_text[:4000]},
                             {"role": "user", "content": f"That is not a valid report: {exc}. Answer with the corrected JSON object only."}]
                first_attempt = 1
            else:
                if last_text.strip():
                    messages.append({"role": "assistant", "content": last_text[:4000]})
                messages.append({"role": "user", "content": WRITE_NOW})
        else:
            return _finish(report, redactor, deterministic, model=alias, tokens=tokens, repaired=False, structured="prompt")
    last_error = ""
    for attempt in range(first_attempt, 2):  # the answer, then one repair
        completion = llm.complete_json(
            messages, alias=alias, schema=REPORT_SCHEMA, name="rca_report", purpose="rca", deadline=deadline
        )
        tokens += completion.tokens
        try:
            report = _checked(completion.content, investigation)
        except ReportInvalid as exc:
            last_error = str(exc)
            log.warning("rca_llm_report_invalid", attempt=attempt + 1, error=last_error, model=alias,
                        truncated=completion.truncated)
            if completion.truncated:
                # Cut by max_tokens: a repair within the same budget would be cut again.
                raise ReportTruncated(f"cut at {llm.max_tokens_for('rca')} tokens (LLM_MAX_TOKENS_RCA)") from None
            messages += [
                {"role": "assistant", "content": completion.content[:4000]},
                {"role": "user", "content": f"That is not a valid report: {last_error}. Answer with the corrected JSON object only."},
            ]
            continue
        return _finish(report, redactor, deterministic, model=completion.model_label, tokens=tokens,
                       repaired=attempt == 1, structured=completion.structured)
    raise ReportInvalid(last_error)


def _finish(report: dict[str, Any], redactor: Redactor, deterministic: Mapping[str, Any], *, model: str, tokens: int,
            repaired: bool, structured: str) -> dict[str, Any]:
    report = redactor.restore_json(report)
    known_playbooks = set(PLAYBOOKS.values())
    for action in report["recommended_actions"]:
        if action.get("playbook") not in known_playbooks:
            action["playbook"] = None  # a playbook name the model made up is no recommendation
    report["method"] = "llm"
    report["model"] = model
    report["tokens"] = tokens
    report["repaired"] = repaired
    report["structured_output"] = structured
    report["finding_types"] = deterministic.get("finding_types", [])
    return report


def analyze(
    bundle: dict[str, Any], *, use_llm: bool | None = None, model: str | None = None, deadline: float | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The RCA report for a bundle. Raises BundleError (naming the field) on a malformed bundle.

    With an LLM, its report within `deadline` (monotonic; default LLM_RCA_TIME_LIMIT from now);
    on any failure of that part the deterministic report, with `fallback: {reason, detail}`.
    With `context` ({"cluster": name, or "" for the default; "subject": what is analysed}) the
    model may first investigate the live cluster with LOW tools (agents/rca/investigate.py).
    """
    deterministic = deterministic_report(bundle)
    alias = model or settings.LLM_RCA_MODEL or settings.LLM_DEFAULT_MODEL
    if use_llm is None:
        use_llm = llm.is_configured(alias)
    report = deterministic
    if use_llm:
        try:
            report = _llm_report(bundle, deterministic, alias, deadline or llm.deadline_in(settings.LLM_RCA_TIME_LIMIT),
                                 context)
        except Exception as exc:  # noqa: BLE001 - whatever broke, the incident gets the deterministic report
            reason, detail = _fallback_reason(exc)
            metrics.RCA_FALLBACKS.labels(reason).inc()
            report = {**deterministic, "fallback": {"reason": reason, "detail": detail},
                      "note": f"Deterministic report: {detail}."}
            if reason == "error":
                log.exception("rca_fallback", reason=reason)
            else:
                log.warning("rca_fallback", reason=reason, detail=str(exc)[:500])
    metrics.RCA_REPORTS.labels(report["method"], report["failure_class"]).inc()
    log.info("rca_report", method=report["method"], failure_class=report["failure_class"], confidence=report["confidence"],
             tool_calls=len((report.get("investigation") or {}).get("calls") or []))
    report["analyzed_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return with_log_excerpts(report, bundle)


def _fallback_reason(exc: BaseException) -> tuple[str, str]:
    """(reason, detail): the detail is read by people on the incident page."""
    if isinstance(exc, ReportTruncated):
        return "invalid_output", f"the LLM's report was {exc}"
    if isinstance(exc, ReportInvalid):
        return "invalid_output", f"the LLM's report was invalid after one repair ({exc})"
    if isinstance(exc, llm.TimeLimitReached | SoftTimeLimitExceeded):
        return "time_limit", "the LLM did not finish within the time allowed for it"
    if isinstance(exc, llm.LLMError):
        return "provider_error", f"the LLM call failed ({exc})"
    return "error", "the LLM analysis failed unexpectedly (see the worker log)"
