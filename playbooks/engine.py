"""The remediation engine: runs a rule's playbook against an incident, one step per task.

Life of a run:
- `start_run_for_incident` (the `incident_opened` receiver, in the watch loop's transaction)
  picks the winning rule, creates the `PlaybookRun` with a snapshot of its steps, and queues
  the first step on commit.
- `execute_step` (the `playbooks.run_step` task) claims its `StepRun` with a conditional
  update, does its one thing (a tool call through `call_tool`, an RCA, a notification, a
  verification) outside any transaction, then records the result and queues the next step in
  one transaction that holds the run's row lock. A MEDIUM/HIGH tool step instead requests an
  approval in that same transaction and the run waits without a worker.
- `on_approval_decided` (the `approval_decided` receiver) resumes the step (approved) or
  ends the run (rejected, expired).
- `reconcile` (beat, every AIOPS_RECONCILE_INTERVAL) re-enqueues running steps whose lease
  lapsed (the worker renews it from a heartbeat thread while it works, so a lapse means it
  died) and queued steps whose message went quiet, so a lost broker message or a killed worker
  delays a run by well under a minute, never loses it.

Lock order everywhere: the run's row, then its step's row.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, Q, Value
from django.utils import timezone

from playbooks import metrics_engine as metrics
from playbooks.models import PlaybookRun, Rule, Step, StepRun
from playbooks.rules import decide, playbook_steps
from playbooks.signals import notification_requested, rca_ready, run_finished
from playbooks.steps import HANDLERS, MUTATING, Result, condition_result, remember_node_workloads
from playbooks.templates_render import TemplateError

log = structlog.get_logger(__name__)

S = StepRun.State
R = PlaybookRun.State
Outcome = PlaybookRun.Outcome
# Minimum quiet time before the reconciler touches a run that has no step in flight.
STALLED_RUN_GRACE = timedelta(seconds=60)


# --- Starting runs -----------------------------------------------------------------------


def start_run_for_incident(incident: Any) -> PlaybookRun | None:
    """Match the rules and create the run; call inside the transaction that opened the incident."""
    if PlaybookRun.objects.filter(incident=incident).exclude(state=R.FINISHED).exists():
        metrics.RULE_MATCHES.labels("active_run").inc()
        log.info("playbook_not_started", incident=incident.pk, reason="a run is already active")
        return None
    rule, why = decide(incident)
    if rule is None:
        metrics.RULE_MATCHES.labels(why["code"]).inc()
        log.info("playbook_not_started", incident=incident.pk, reason=why["text"])
        note_no_run(incident, why)
        return None
    return create_run(incident, rule, reason=why["text"])


def note_no_run(incident: Any, why: dict[str, Any] | None) -> None:
    """Why no playbook ran (or acted), as data on the incident: every surface shows it."""
    incident.no_run_reason = why
    type(incident).objects.filter(pk=incident.pk).update(no_run_reason=why)


def create_run(incident: Any, rule: Rule, *, start: bool | None = None, reason: str = "") -> PlaybookRun | None:
    steps = playbook_steps(rule.playbook)
    if not steps:
        metrics.RULE_MATCHES.labels("no_steps").inc()
        log.warning("playbook_not_started", incident=incident.pk, rule=rule.name, reason="playbook has no steps")
        return None
    start = rule.auto_run if start is None else start
    cluster_id = incident.cluster_id or _default_cluster_id()
    if cluster_id is None:
        metrics.RULE_MATCHES.labels("no_cluster").inc()
        log.warning("playbook_not_started", incident=incident.pk, rule=rule.name, reason="no cluster to act on")
        return None
    now = timezone.now()
    try:
        # A savepoint: when another worker created this incident's run a moment ago, the
        # unique partial index refuses ours and the caller's transaction carries on.
        with transaction.atomic():
            run = PlaybookRun.objects.create(
                incident=incident,
                cluster_id=cluster_id,
                rule=rule,
                playbook=rule.playbook,
                playbook_name=rule.playbook.name,
                state=R.RUNNING if start else R.PROPOSED,
                dry_run=settings.AIOPS_DRY_RUN,
                created_at=now,
                started_at=now if start else None,
            )
            StepRun.objects.bulk_create(
                StepRun(
                    run=run,
                    step=step,
                    order=step.order,
                    name=step.name,
                    kind=step.kind,
                    tool=step.tool,
                    args_template=step.args,
                    when=step.when,
                    on_failure=step.on_failure,
                    timeout_seconds=step.timeout_seconds,
                )
                for step in steps
            )
    except IntegrityError:
        metrics.RULE_MATCHES.labels("active_run").inc()
        log.info("playbook_not_started", incident=incident.pk, reason="a run is already active")
        return None
    metrics.RULE_MATCHES.labels("matched").inc()
    metrics.RUNS_STARTED.labels(run.playbook_name, "auto" if start else "proposed").inc()
    if not start:
        note_no_run(incident, {
            "code": "auto_run_off", "rule": rule.name, "run": run.pk,
            "text": f"rule {rule.name} has auto_run off: run #{run.pk} ({run.playbook_name}) waits for a person to "
                    "start it",
        })
    log.info(
        "playbook_run_created", run=run.pk, incident=incident.pk, rule=rule.name, playbook=run.playbook_name,
        started=start, dry_run=run.dry_run, matched=reason,
    )
    if start:
        _queue_next(run)
    return run


def _default_cluster_id() -> int | None:
    """An alert whose labels name no cluster is acted on in the default cluster."""
    from k8s.models import Cluster

    return Cluster.objects.filter(is_default=True, enabled=True).values_list("pk", flat=True).first()


def start_proposed_run(run_id: int, *, by: str = "") -> bool:
    """Start a run that waited for a person (rule with auto_run off)."""
    with transaction.atomic():
        run = PlaybookRun.objects.select_for_update().get(pk=run_id)
        if run.state != R.PROPOSED:
            return False
        run.state = R.RUNNING
        run.started_at = timezone.now()
        run.save(update_fields=["state", "started_at", "updated_at"])
        log.info("playbook_run_started", run=run.pk, by=by)
        _queue_next(run)
    return True


def cancel_run(run_id: int, *, by: str = "") -> bool:
    with transaction.atomic():
        run = PlaybookRun.objects.select_for_update().get(pk=run_id)
        if run.state == R.FINISHED:
            return False
        why = f"cancelled by {by or 'an operator'}"
        finished = finish_run(run, Outcome.CANCELLED, why)
        _cancel_pending_approvals(run, f"run #{run.pk} {why}")
        return finished


def _cancel_pending_approvals(run: PlaybookRun, reason: str) -> None:
    """Nobody may approve a step of a run that ended: its pending approvals are cancelled (every
    copy of their message edited)."""
    from agents.services import cancel_approval

    for approval_id in StepRun.objects.filter(run=run, approval__state="pending").values_list("approval_id", flat=True):
        cancel_approval(approval_id, reason)


# --- Moving a run forward (callers hold the run's row) -----------------------------------


# Broker priorities (Redis: 0 is served first). A step a person just approved goes ahead of
# the backlog an incident storm queues up, so "approve" acts at once; re-checks and retries,
# which wait anyway, go last.
PRIORITY_APPROVED = 0
PRIORITY_STEP = 3
PRIORITY_RECHECK = 6


def _enqueue(step_run_id: int, countdown: float | None = None, priority: int = PRIORITY_STEP) -> None:
    from playbooks.tasks_engine import run_step

    # robust: a broker that is down at commit time must not turn a committed transition into
    # an error; the row says queued and the reconciler sends the message again.
    transaction.on_commit(
        lambda: run_step.apply_async((step_run_id,), countdown=countdown, priority=priority), robust=True
    )


def _queue_next(run: PlaybookRun) -> None:
    step = run.steps.filter(state=S.PENDING).order_by("order").first()
    if step is None:
        outcome, summary = _final_outcome(run)
        finish_run(run, outcome, summary)
        return
    now = timezone.now()
    if StepRun.objects.filter(pk=step.pk, state=S.PENDING).update(state=S.QUEUED, queued_at=now, updated_at=now):
        _enqueue(step.pk)


def _final_outcome(run: PlaybookRun) -> tuple[str, str]:
    steps = list(run.steps.order_by("order"))
    failed = [s for s in steps if s.state == S.FAILED and s.kind != Step.Kind.VERIFY]
    notes = [f"step {s.order} {s.name} failed: {s.error[:200]}" for s in failed]
    if run.dry_run:
        return Outcome.DRY_RUN, "dry run: every step rendered and recorded, no tool called"
    verdict = (run.context or {}).get("verdict")
    if verdict:
        detail = (run.context or {}).get("verdict_detail", "")
        skipped_actions = [s for s in steps if s.state == S.SKIPPED and s.risk in MUTATING]
        if verdict == Outcome.FIX_DID_NOT_HOLD and skipped_actions:
            why = "; ".join(s.output for s in skipped_actions)
            return Outcome.NOT_REMEDIATED, f"still failing and no action was taken ({why}): {detail}"
        return verdict, "; ".join([detail, *notes])
    return Outcome.COMPLETED, "; ".join(notes) or "all steps done"


def finish_run(run: PlaybookRun, outcome: str, summary: str = "") -> bool:
    now = timezone.now()
    updated = PlaybookRun.objects.filter(pk=run.pk).exclude(state=R.FINISHED).update(
        state=R.FINISHED, outcome=outcome, finished_at=now, updated_at=now, summary=summary[:4000]
    )
    if not updated:
        return False
    StepRun.objects.filter(run=run, state__in=[S.PENDING, S.QUEUED, S.WAITING_APPROVAL]).update(
        state=S.CANCELLED, finished_at=now, updated_at=now
    )
    run.refresh_from_db()
    metrics.RUNS_FINISHED.labels(run.playbook_name, outcome).inc()
    log.info("playbook_run_finished", run=run.pk, incident=run.incident_id, outcome=outcome, summary=summary[:300])
    run_finished.send(sender=PlaybookRun, run=run)
    return True


# --- Executing one step ------------------------------------------------------------------


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


# --- Approvals ---------------------------------------------------------------------------


def on_approval_decided(approval: Any) -> None:
    """Resume (approved) or end (rejected, expired) the run waiting on this approval."""
    if approval.origin != "playbook" or not str(approval.origin_ref).isdigit():
        return
    step_run_id = int(approval.origin_ref)
    run_id = StepRun.objects.filter(pk=step_run_id, approval_id=approval.pk).values_list("run_id", flat=True).first()
    if run_id is None:
        return
    with transaction.atomic():
        run = PlaybookRun.objects.select_for_update().get(pk=run_id)
        step = StepRun.objects.select_for_update().get(pk=step_run_id)
        if step.state != S.WAITING_APPROVAL or run.state == R.FINISHED:
            return
        now = timezone.now()
        who = getattr(approval.decided_by, "username", "") if approval.decided_by_id else ""
        if approval.state == "approved":
            step.state = S.QUEUED
            step.queued_at = now
            step.save(update_fields=["state", "queued_at", "updated_at"])
            run.state = R.RUNNING
            run.save(update_fields=["state", "updated_at"])
            log.info("step_approved", run=run.pk, step_run=step.pk, approval=approval.code, by=who)
            _enqueue(step.pk, priority=PRIORITY_APPROVED)
        elif approval.state == "cancelled":
            step.state = S.CANCELLED
            step.finished_at = now
            step.error = f"approval {approval.code} cancelled: {approval.decision_reason}; nothing executed"
            step.save(update_fields=["state", "finished_at", "error", "updated_at"])
            metrics.STEPS.labels(step.kind, step.state).inc()
            finish_run(run, Outcome.CANCELLED, f"cancelled: {approval.decision_reason}")
        elif approval.state in ("rejected", "expired"):
            step.state = approval.state
            step.finished_at = now
            reason = f": {approval.decision_reason}" if approval.decision_reason else ""
            step.error = f"approval {approval.code} {approval.state}{' by ' + who if who else ''}{reason}; nothing executed"
            step.save(update_fields=["state", "finished_at", "error", "updated_at"])
            metrics.STEPS.labels(step.kind, step.state).inc()
            finish_run(run, approval.state, step.error)


# --- Runs follow their incident ----------------------------------------------------------


def cancel_incident_runs(incident_id: int, reason: str = "") -> int:
    """The incident resolved or was closed: its active runs end `cancelled` with the reason, and
    their pending approvals are cancelled (every copy of the message edited through the
    `approval_decided` path). Idempotent: a second call finds nothing active."""
    from playbooks.models import Incident

    incident = Incident.objects.filter(pk=incident_id).first()
    if incident is None or incident.is_open:
        return 0
    why = f"incident #{incident_id} was resolved" + (f" ({reason})" if reason else "")
    cancelled = 0
    for run_id in PlaybookRun.objects.filter(incident_id=incident_id).exclude(state=R.FINISHED).values_list(
        "pk", flat=True
    ):
        with transaction.atomic():
            run = PlaybookRun.objects.select_for_update().filter(pk=run_id).exclude(state=R.FINISHED).first()
            if run is None or (run.context or {}).get("verdict") == Outcome.RESOLVED:
                continue  # finished meanwhile, or it is the run that verified the incident healthy
            _cancel_pending_approvals(run, why)
            if finish_run(run, Outcome.CANCELLED, f"cancelled: {why}"):
                cancelled += 1
            else:
                cancelled += int(PlaybookRun.objects.filter(pk=run_id, outcome=Outcome.CANCELLED).exists())
    if cancelled:
        log.info("incident_runs_cancelled", incident=incident_id, runs=cancelled, reason=why[:300])
    return cancelled


# --- Recovery ----------------------------------------------------------------------------


def reconcile(now: Any = None) -> dict[str, int]:
    """Re-send steps whose worker died (lease lapsed) or whose message went quiet; repair runs
    whose approval was decided without us."""
    now = now or timezone.now()
    counts = {"queued": 0, "running": 0, "stalled_run": 0, "decided": 0, "incident_closed": 0}
    deadline = ExpressionWrapper(
        F("updated_at") + ExpressionWrapper(F("timeout_seconds") * Value(timedelta(seconds=1)), output_field=DurationField()),
        output_field=DateTimeField(),
    )
    live = StepRun.objects.filter(run__state=R.RUNNING)
    dead_worker = Q(state=S.RUNNING, lease_expires_at__lt=now)
    # Rows claimed before leases existed fall back to the step's time limit.
    legacy = Q(state=S.RUNNING, lease_expires_at__isnull=True, deadline__lt=now)
    lost_message = Q(state=S.QUEUED, updated_at__lt=now - timedelta(seconds=settings.AIOPS_STEP_REQUEUE_AFTER))
    stale = (
        live.annotate(deadline=deadline).filter(dead_worker | legacy | lost_message)
        .values_list("pk", "state", "updated_at", "lease_expires_at")[:500]
    )
    for pk, state, updated_at, lease in stale:
        with transaction.atomic():
            if StepRun.objects.filter(pk=pk, state=state, updated_at=updated_at).update(
                state=S.QUEUED, queued_at=now, updated_at=now, lease_expires_at=None
            ):
                counts[state] += 1
                metrics.RECONCILED.labels(state).inc()
                log.warning("step_requeued", step_run=pk, was=state, quiet_since=updated_at.isoformat(),
                            lease_expired_at=lease.isoformat() if lease else None)
                _enqueue(pk)

    in_flight = [S.QUEUED, S.RUNNING, S.WAITING_APPROVAL]
    stalled = (
        PlaybookRun.objects.filter(state=R.RUNNING, updated_at__lt=now - STALLED_RUN_GRACE)
        .exclude(steps__state__in=in_flight)
        .values_list("pk", flat=True)[:200]
    )
    for run_id in stalled:
        with transaction.atomic():
            run = PlaybookRun.objects.select_for_update().get(pk=run_id)
            if run.state == R.RUNNING and not run.steps.filter(state__in=in_flight).exists():
                counts["stalled_run"] += 1
                metrics.RECONCILED.labels("stalled_run").inc()
                log.warning("run_resumed_by_reconciler", run=run_id)
                _queue_next(run)

    # Runs whose incident closed while the follow-up task was lost (a broker outage).
    for incident_id in set(
        PlaybookRun.objects.exclude(state=R.FINISHED).filter(incident__state="resolved", updated_at__lt=now - STALLED_RUN_GRACE)
        .values_list("incident_id", flat=True)[:200]
    ):
        counts["incident_closed"] += cancel_incident_runs(incident_id, "resolved")

    decided = StepRun.objects.filter(state=S.WAITING_APPROVAL,
                                     approval__state__in=["approved", "rejected", "expired", "cancelled"])
    for step in decided.select_related("approval", "approval__decided_by")[:200]:
        counts["decided"] += 1
        metrics.RECONCILED.labels("decided").inc()
        on_approval_decided(step.approval)
    if any(counts.values()):
        log.info("runs_reconciled", **counts)
    return counts
