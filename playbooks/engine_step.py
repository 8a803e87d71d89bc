"""Executing one step of a run (the `playbooks.run_step` task): claim it, do its one thing outside
any transaction while a heartbeat renews its lease, then record the result and move the run on in
one transaction that holds the run's row lock. A MEDIUM/HIGH tool step requests an approval there.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from playbooks import metrics_engine as metrics
from playbooks.engine_core import (
    PRIORITY_RECHECK,
    Outcome,
    R,
    S,
    _enqueue,
    _queue_next,
    finish_run,
    note_no_run,
)
from playbooks.models import PlaybookRun, Rule, Step, StepRun
from playbooks.signals import notification_requested, rca_ready
from playbooks.steps import HANDLERS, Result, condition_result, remember_node_workloads
from playbooks.templates_render import TemplateError

log = structlog.get_logger("playbooks.engine")


def _lease() -> timedelta:
    return timedelta(seconds=settings.AIOPS_STEP_LEASE)


class Heartbeat:
    """Renews a running step's lease from a thread while the step works, so a step that takes
    minutes stays ours and a killed worker's step is sent again as soon as its lease lapses."""

    def __init__(self, step_run_id: int, attempt: int) -> None:
        self.step_run_id, self.attempt = step_run_id, attempt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{step_run_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        from django.db import connection

        try:
            while not self._stop.wait(settings.AIOPS_STEP_LEASE / 3):
                renewed = StepRun.objects.filter(pk=self.step_run_id, state=S.RUNNING, attempts=self.attempt).update(
                    lease_expires_at=timezone.now() + _lease()
                )
                if not renewed:
                    log.warning("step_lease_lost", step_run=self.step_run_id, attempt=self.attempt)
                    return
        except Exception:  # noqa: BLE001 - a database blip: the lease lapses and the step is re-sent
            log.exception("step_heartbeat_failed", step_run=self.step_run_id)
        finally:
            connection.close()


def execute_step(step_run_id: int) -> str:
    now = timezone.now()
    claimed = StepRun.objects.filter(pk=step_run_id, state=S.QUEUED, run__state=R.RUNNING).update(
        state=S.RUNNING, started_at=now, updated_at=now, attempts=F("attempts") + 1, lease_expires_at=now + _lease()
    )
    if not claimed:
        state = StepRun.objects.filter(pk=step_run_id).values_list("state", flat=True).first()
        log.info("step_not_claimed", step_run=step_run_id, state=state)
        return f"not claimed ({state or 'missing'})"
    step = StepRun.objects.select_related("run", "run__incident", "run__cluster", "run__rule", "approval").get(
        pk=step_run_id
    )
    run = step.run
    structlog.contextvars.bind_contextvars(run=run.pk, step_run=step.pk, incident=run.incident_id)
    started = time.monotonic()
    try:
        with Heartbeat(step.pk, step.attempts):
            if run.incident.workload_kind == "Node" and "node_workloads" not in (run.context or {}):
                remember_node_workloads(run.pk)
                run.refresh_from_db(fields=["context"])
            result = condition_result(step, run) or HANDLERS[step.kind](step, run)
    except TemplateError as exc:
        result = Result(S.FAILED, error=f"argument template: {exc}")
    except Exception as exc:  # noqa: BLE001 - a step's failure is recorded on its row, not lost in a log
        log.exception("step_crashed", kind=step.kind, tool=step.tool)
        result = Result(S.FAILED, error=f"{type(exc).__name__}: {exc}")
    elapsed = time.monotonic() - started
    metrics.STEP_DURATION.labels(step.kind, step.tool or step.kind).observe(elapsed)
    _record(step, result)
    return result.state


def _record(step: StepRun, result: Result) -> None:
    now = timezone.now()
    with transaction.atomic():
        run = PlaybookRun.objects.select_for_update(of=("self",)).select_related("incident", "rule").get(pk=step.run_id)
        current = StepRun.objects.select_for_update().get(pk=step.pk)
        if current.state != S.RUNNING or current.attempts != step.attempts:
            # The reconciler gave this step to another attempt while we worked; that one records.
            log.warning("step_result_discarded", state=current.state, attempts=current.attempts)
            return
        if result.rendered_args is not None:
            current.rendered_args = result.rendered_args
        if result.risk:
            current.risk = result.risk
        fields = ["state", "rendered_args", "risk", "output", "data", "error", "audit_id", "finished_at", "updated_at"]
        current.output = result.output[:20000]
        current.data = result.data
        current.error = result.error[:4000]
        if result.audit_id:
            current.audit_id = result.audit_id

        if result.state == S.WAITING_APPROVAL:
            _request_approval(run, current)
            return
        if result.requeue_in is not None and run.state != R.FINISHED:
            current.state = S.QUEUED
            current.queued_at = now
            current.save(update_fields=["state", "queued_at", "data", "output", "error", "updated_at"])
            _enqueue(current.pk, countdown=result.requeue_in, priority=PRIORITY_RECHECK)
            return

        current.state = result.state
        current.finished_at = now
        current.save(update_fields=fields)
        metrics.STEPS.labels(current.kind, current.state).inc()
        log.info(
            "step_finished", order=current.order, name=current.name, kind=current.kind, tool=current.tool,
            state=current.state, risk=current.risk, error=current.error[:300],
        )
        if run.state == R.FINISHED:
            return
        if result.rca_report is not None:
            run.incident.rca_report = result.rca_report
            run.incident.save(update_fields=["rca_report"])
            rca_ready.send(sender=PlaybookRun, incident=run.incident, report=result.rca_report, run=run)
        if result.notify is not None:
            text, severity = result.notify
            notification_requested.send(sender=PlaybookRun, incident=run.incident, run=run, text=text, severity=severity)
        if current.kind == Step.Kind.HANDOFF and current.state == S.SUCCEEDED:
            if run.dry_run:
                finish_run(run, Outcome.DRY_RUN, f"dry run: would hand off: {current.output}")
            else:
                finish_run(run, Outcome.HANDED_OFF, current.output)
            return
        if result.verdict:
            run.context = {**(run.context or {}), "verdict": result.verdict, "verdict_detail": result.output[:1000]}
            run.save(update_fields=["context", "updated_at"])
            if result.verdict == Outcome.RESOLVED:
                _resolve_incident(run)
        if result.side:
            run.context = {**(run.context or {}), **result.side}
            run.save(update_fields=["context", "updated_at"])
        if current.state in (S.REJECTED, S.EXPIRED):
            finish_run(run, current.state, current.error)
        elif current.state == S.FAILED and current.on_failure == Step.OnFailure.STOP and current.kind != Step.Kind.VERIFY:
            finish_run(run, Outcome.FAILED, f"step {current.order} {current.name} failed: {current.error[:500]}")
        else:
            _queue_next(run)


def _approvers_for(rule: Rule | None) -> list[str] | None:
    if rule is None:
        return None
    names = {user.get_username() for user in rule.approvers.all()}
    if rule.approver_group_id:
        names.update(user.get_username() for user in rule.approver_group.user_set.filter(is_active=True))
    return sorted(names) or None


def _request_approval(run: PlaybookRun, step: StepRun) -> None:
    """In _record's transaction: budget check, then the approval and the waiting state together."""
    from agents.services import ApprovalError, request_approval
    from k8s.models import Cluster

    if _escalated(run, step):
        return
    from playbooks.services.quiet import hold_step

    if hold_step(run, step):  # silenced, or a maintenance window: not requested now
        return
    # Serialise budget checks of one cluster, so two runs cannot both take the last action.
    Cluster.objects.select_for_update().filter(pk=run.cluster_id).first()
    since = timezone.now() - timedelta(hours=1)
    used = StepRun.objects.filter(
        run__cluster_id=run.cluster_id, approval__isnull=False, approval__requested_at__gte=since
    ).count()
    budget = settings.AIOPS_ACTIONS_PER_HOUR
    now = timezone.now()
    if used >= budget:
        step.state = S.SKIPPED
        step.output = f"not requested: the cluster's budget of {budget} automatic actions per hour is used up"
        step.finished_at = now
        step.save(update_fields=["state", "rendered_args", "risk", "output", "finished_at", "updated_at"])
        metrics.STEPS.labels(step.kind, step.state).inc()
        log.warning("step_budget_exhausted", used=used, budget=budget, tool=step.tool)
        note_no_run(run.incident, {
            "code": "budget", "run": run.pk, "step": step.name,
            "text": f"the cluster's budget of {budget} automatic actions per hour is spent: step {step.order} "
                    f"({step.name}) of run #{run.pk} was not requested",
        })
        _queue_next(run)
        return
    incident = run.incident
    # Read in this transaction: a poll resolving the incident right now either committed
    # already (we see it and ask nobody), or its follow-up (`cancel_incident_runs`) waits for
    # our lock on the run and then cancels the approval we are about to request.
    state = type(incident).objects.filter(pk=incident.pk).values_list("state", flat=True).first()
    if state != "open":
        step.state = S.CANCELLED
        step.output = f"not requested: incident #{incident.pk} is no longer open ({state or 'deleted'})"
        step.finished_at = now
        step.save(update_fields=["state", "rendered_args", "risk", "output", "finished_at", "updated_at"])
        metrics.STEPS.labels(step.kind, step.state).inc()
        log.info("step_approval_not_requested", reason="incident not open", incident=incident.pk)
        finish_run(run, Outcome.CANCELLED, f"cancelled: incident #{incident.pk} is no longer open")
        return
    try:
        approval = request_approval(
            step.tool,
            step.rendered_args or {},
            reason=(
                f"Playbook {run.playbook_name}, step {step.order} ({step.name}) for incident #{incident.pk}: "
                f"{incident.primary_type or incident.alertname} on {incident.workload_kind} "
                f"{incident.namespace + '/' if incident.namespace else ''}{incident.workload_name}"
            ),
            origin="playbook",
            origin_ref=str(step.pk),
            requester=f"playbook:{run.playbook_name}",
            approvers=_approvers_for(run.rule),
        )
    except ApprovalError as exc:
        step.state = S.FAILED
        step.error = f"approval could not be requested: {exc}"
        step.finished_at = now
        step.save(update_fields=["state", "rendered_args", "risk", "output", "error", "finished_at", "updated_at"])
        metrics.STEPS.labels(step.kind, step.state).inc()
        log.warning("step_approval_refused", tool=step.tool, error=str(exc))
        if step.on_failure == Step.OnFailure.STOP:
            finish_run(run, Outcome.FAILED, f"step {step.order} {step.name}: {step.error}")
        else:
            _queue_next(run)
        return
    step.approval = approval
    step.state = S.WAITING_APPROVAL
    step.save(update_fields=["state", "approval", "rendered_args", "risk", "output", "updated_at"])
    run.state = R.WAITING_APPROVAL
    run.save(update_fields=["state", "updated_at"])
    metrics.STEPS.labels(step.kind, step.state).inc()
    log.info("step_waiting_approval", tool=step.tool, risk=step.risk, approval=approval.pk, code=approval.code)


def _escalated(run: PlaybookRun, step: StepRun) -> bool:
    """The same action already failed K times for this workload: hand off with the history."""
    from playbooks.history import history_sentence, repeated_failures

    rule = run.rule
    if rule is None:
        return False
    failures = repeated_failures(run, step.tool)
    if len(failures) < rule.escalate_after:
        return False
    incident = run.incident
    sentence = history_sentence(incident, step.tool, failures)
    where = f"{incident.workload_kind} {incident.namespace + '/' if incident.namespace else ''}{incident.workload_name}"
    text = (f"Handing {where} to a person: not asking for {step.tool} again. The agent {sentence}. "
            "Repeating it will not fix this; the cause needs a person.")
    step.state = S.SKIPPED
    step.output = f"not requested: {sentence}"
    step.finished_at = timezone.now()
    step.save(update_fields=["state", "rendered_args", "risk", "output", "finished_at", "updated_at"])
    metrics.STEPS.labels(step.kind, step.state).inc()
    metrics.ESCALATIONS.labels(rule.name).inc()
    log.warning("step_escalated", tool=step.tool, rule=rule.name, failures=[f.run.pk for f in failures])
    notification_requested.send(sender=PlaybookRun, incident=incident, run=run, text=text,
                                severity=incident.severity or "warning")
    note_no_run(incident, {"code": "escalated", "rule": rule.name, "run": run.pk,
                           "runs": [f.run.pk for f in failures], "text": f"the agent {sentence}; handed off"})
    finish_run(run, Outcome.HANDED_OFF, text)
    return True


def _resolve_incident(run: PlaybookRun) -> None:
    from playbooks.models import Incident
    from playbooks.services.incidents import resolve_incident

    incident = Incident.objects.select_for_update().get(pk=run.incident_id)
    if incident.state == Incident.State.OPEN:
        resolve_incident(
            incident, now=timezone.now(), reason=f"verified healthy by playbook run {run.pk} ({run.playbook_name})"
        )
        run.incident = incident
