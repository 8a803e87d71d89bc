"""What each kind of step does (tool, rca, notify, handoff, verify) and whether it runs at all
(its `when:` condition). Each handler runs outside any transaction and returns a `Result`; the
engine records it (`playbooks.engine._record`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from playbooks import metrics_engine as metrics
from playbooks.models import PlaybookRun, Step, StepRun
from playbooks.templates_render import render_args, render_value

log = structlog.get_logger(__name__)

S = StepRun.State
Outcome = PlaybookRun.Outcome
MUTATING = ("MEDIUM", "HIGH")
TRANSPORT_ATTEMPTS = 5


@dataclass
class Result:
    state: str
    output: str = ""
    data: Any = None
    error: str = ""
    risk: str = ""
    rendered_args: dict[str, Any] | None = None
    audit_id: int | None = None
    requeue_in: float | None = None  # verify: check again after this many seconds
    verdict: str = ""  # verify: the run outcome it decided
    rca_report: dict[str, Any] | None = None
    notify: tuple[str, str] | None = None  # (text, severity)
    side: dict[str, Any] = field(default_factory=dict)


# --- Step kinds --------------------------------------------------------------------------


def _tool_step(step: StepRun, run: PlaybookRun) -> Result:
    from agents.registry import tool_risk

    # Resumed after an approval: the arguments that were approved, never re-rendered ones.
    args = step.rendered_args if step.rendered_args is not None else render_args(step.args_template, run.incident, run)
    risk = tool_risk(step.tool)
    if run.dry_run:
        return Result(S.SKIPPED, output=f"dry run: {step.tool} [{risk}] not called", rendered_args=args, risk=risk)
    if risk not in MUTATING:
        return _call(step, run, args, risk, approval=None)
    approval = step.approval
    if approval is None:
        if not settings.AIOPS_AUTO_REMEDIATION:
            return Result(
                S.SKIPPED, output="not requested: AIOPS_AUTO_REMEDIATION is off", rendered_args=args, risk=risk
            )
        return Result(S.WAITING_APPROVAL, rendered_args=args, risk=risk)
    if approval.state == "approved":
        return _call(step, run, args, risk, approval=approval)
    if approval.state in ("rejected", "expired"):
        return Result(approval.state, error=f"approval {approval.code} {approval.state}", rendered_args=args, risk=risk)
    return Result(S.FAILED, error=f"approval {approval.code} is {approval.state}", rendered_args=args, risk=risk)


def _call(step: StepRun, run: PlaybookRun, args: dict[str, Any], risk: str, approval: Any) -> Result:
    from agents.services import MCPTransportError, ToolRefused, call_tool

    incident = run.incident
    try:
        outcome = call_tool(
            step.tool,
            args,
            actor=f"playbook:{run.playbook_name}",
            reason=f"run {run.pk} step {step.order} ({step.name}) for incident #{incident.pk}",
            approval=approval,
            idempotency_key=f"steprun:{step.pk}",
        )
    except ToolRefused as exc:
        return Result(S.FAILED, error=f"refused by the risk gate: {exc}", rendered_args=args, risk=risk)
    except MCPTransportError as exc:
        # The server was unreachable: nothing ran (or, idempotent in effect, running again is
        # harmless). Try again with back-off, keeping the same idempotency key and approval.
        if step.attempts < TRANSPORT_ATTEMPTS:
            delay = min(2 ** step.attempts, 60)
            log.warning("step_tool_unreachable", tool=step.tool, attempt=step.attempts, retry_in=delay, error=str(exc))
            return Result(S.QUEUED, error=f"attempt {step.attempts}: {exc}", rendered_args=args, risk=risk,
                          requeue_in=delay)
        return Result(S.FAILED, error=f"tool server unreachable after {step.attempts} attempts: {exc}",
                      rendered_args=args, risk=risk)
    if approval is not None and approval.decided_at:
        metrics.DECISION_TO_ACTION.labels(step.tool).observe((timezone.now() - approval.decided_at).total_seconds())
    return Result(
        S.SUCCEEDED if outcome.ok else S.FAILED,
        output=outcome.output,
        data=outcome.data,
        error="" if outcome.ok else (outcome.output or "tool error")[:4000],
        rendered_args=args,
        risk=risk,
        audit_id=outcome.audit_id,
    )


def _workload(run: PlaybookRun) -> dict[str, str]:
    incident = run.incident
    return {"kind": incident.workload_kind, "namespace": incident.namespace, "name": incident.workload_name}


# What an RCA step keeps of its time limit for itself (storing the report, the next step's enqueue).
RCA_STEP_MARGIN_S = 10


def _rca_step(step: StepRun, run: PlaybookRun) -> Result:
    from agents.llm import deadline_in
    from agents.rca import analyze, gather_bundle

    # The LLM part ends inside the step's limit (and LLM_RCA_TIME_LIMIT): a slow model yields the
    # deterministic report with its reason, never a step without a report.
    deadline = deadline_in(max(min(settings.LLM_RCA_TIME_LIMIT, step.timeout_seconds - RCA_STEP_MARGIN_S), 1))
    workload = _workload(run)
    # The model may investigate this incident's cluster with LOW tools (audited as llm:rca); named
    # unless it is the default, as tool steps leave it to the MCP server's default.
    context = {"cluster": "" if run.cluster.is_default else run.cluster.name,
               "subject": f"{workload['kind']} {workload['namespace']}/{workload['name']}"}
    report = analyze(gather_bundle(run.cluster, workload), deadline=deadline, context=context)
    from playbooks.history import last_fix

    remembered = last_fix(run.incident)  # the RCA cites what fixed this workload last time
    if remembered:
        report = {**report, "last_fix": remembered}
    summary = f"{report.get('failure_class', 'unknown')}: {report.get('root_cause', '')}"
    return Result(S.SUCCEEDED, output=summary, data=report, rca_report=report)


def _notify_step(step: StepRun, run: PlaybookRun) -> Result:
    from playbooks.templates_render import incident_context

    args = step.args_template or {}
    text = str(render_value(args.get("text", ""), incident_context(run.incident, run)))
    if run.dry_run:
        text = f"[dry run] {text}"
    severity = str(args.get("severity") or run.incident.severity or "info")
    return Result(S.SUCCEEDED, output=text, rendered_args={"text": text, "severity": severity}, notify=(text, severity))


def _handoff_step(step: StepRun, run: PlaybookRun) -> Result:
    """Tell people what the diagnosis says and what to check; the run ends `handed_off`."""
    result = _notify_step(step, run)
    return result


def condition_result(step: StepRun, run: PlaybookRun) -> Result | None:
    """None when the step should run; a SKIPPED result naming the condition and its values."""
    if not step.when or step.approval_id is not None or (step.kind == Step.Kind.VERIFY and step.data):
        return None  # no condition, or resumed after an approval / a re-check: decided already
    from playbooks.conditions import ConditionError, condition_context, evaluate_condition, used_values
    from playbooks.templates_render import incident_context

    context = condition_context(incident_context(run.incident, run), _step_results(run, step.order))
    values = used_values(step.when, context)
    shown = ", ".join(f"{path} = {_shown(value)}" for path, value in values.items()) or "no values"
    try:
        if evaluate_condition(step.when, context):
            return None
    except ConditionError as exc:
        metrics.CONDITIONS.labels("error").inc()
        log.warning("step_condition_failed", order=step.order, name=step.name, when=step.when, error=str(exc))
        return Result(
            S.SKIPPED, output=f"skipped: the condition `{step.when}` could not be evaluated ({exc}); {shown}",
            data={"condition": step.when, "values": values, "error": str(exc)},
        )
    metrics.CONDITIONS.labels("false").inc()
    return Result(
        S.SKIPPED, output=f"skipped: `{step.when}` is false ({shown})", data={"condition": step.when, "values": values}
    )


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"' if value else '"" (none)'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return str(value)


def _step_results(run: PlaybookRun, before: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, state, output, data in run.steps.filter(order__lt=before).order_by("order").values_list(
        "name", "state", "output", "data"
    ):
        results[name] = {
            "ok": state == S.SUCCEEDED, "state": state, "skipped": state == S.SKIPPED, "output": output[:2000],
            "data": data if data is not None else {},
        }
    return results


def _verify_step(step: StepRun, run: PlaybookRun) -> Result:
    from playbooks.verify import verify_workload

    if run.dry_run:
        return Result(S.SKIPPED, output="dry run: nothing was changed, so nothing to verify")
    args = step.args_template or {}
    checks = max(1, int(args.get("checks", 6)))
    interval = float(args.get("interval", 5))
    done = int((step.data or {}).get("checks_done", 0)) + 1
    incident = run.incident
    node_workloads = (run.context or {}).get("node_workloads") or []
    verdict = verify_workload(
        run.cluster, incident.workload_kind, incident.namespace, incident.workload_name, node_workloads,
        _own_incidents(incident, node_workloads) if incident.workload_kind == "Node" else None,
    )
    data = {"checks_done": done, "findings": verdict.findings}
    if verdict.state == "healthy":
        return Result(S.SUCCEEDED, output=verdict.detail, data=data, verdict=Outcome.RESOLVED)
    if verdict.state == "mitigated":
        return Result(S.SUCCEEDED, output=verdict.detail, data=data, verdict=Outcome.MITIGATED)
    if done < checks:
        return Result(S.QUEUED, output=verdict.detail, data=data, requeue_in=interval)
    return Result(S.FAILED, output=verdict.detail, data=data, error=verdict.detail, verdict=Outcome.FIX_DID_NOT_HOLD)


def _own_incidents(node_incident: Any, workload_keys: list[str]) -> dict[str, str]:
    """Workloads from a node that have an open incident of their own (another fault)."""
    from playbooks.models import Incident

    found: dict[str, str] = {}
    wanted = set(workload_keys)
    for other in Incident.objects.filter(cluster_id=node_incident.cluster_id, state=Incident.State.OPEN).exclude(
        pk=node_incident.pk
    ).exclude(workload_kind="Node"):
        key = f"{other.workload_kind}/{other.namespace}/{other.workload_name}"
        if key in wanted:
            found[key] = f"incident #{other.pk} {other.primary_type or other.alertname}"
    return found


HANDLERS = {
    Step.Kind.TOOL: _tool_step,
    Step.Kind.RCA: _rca_step,
    Step.Kind.NOTIFY: _notify_step,
    Step.Kind.VERIFY: _verify_step,
    Step.Kind.HANDOFF: _handoff_step,
}


def remember_node_workloads(run_id: int) -> None:
    """Before a node playbook changes anything: which workloads ran there (verify checks them)."""
    from playbooks.verify import fetch_objects, workloads_on_node

    run = PlaybookRun.objects.select_related("incident", "cluster").get(pk=run_id)
    if run.incident.workload_kind != "Node" or "node_workloads" in (run.context or {}):
        return
    keys = workloads_on_node(fetch_objects(run.cluster), run.incident.workload_name)
    with transaction.atomic():
        locked = PlaybookRun.objects.select_for_update().get(pk=run_id)
        if "node_workloads" not in (locked.context or {}):
            locked.context = {**(locked.context or {}), "node_workloads": keys}
            locked.save(update_fields=["context", "updated_at"])
    log.info("node_workloads_recorded", run=run_id, node=run.incident.workload_name, workloads=keys)
