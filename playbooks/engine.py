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

Modules: `engine_core` (run transitions: queue the next step, finish), `engine_step` (execute
and record one step, request approvals); this one starts runs, follows approvals and incidents,
and reconciles.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, Q, Value
from django.utils import timezone

from playbooks import metrics_engine as metrics
from playbooks.engine_core import (  # noqa: F401 - the engine's public names live here too
    PRIORITY_APPROVED,
    PRIORITY_RECHECK,
    PRIORITY_STEP,
    Outcome,
    R,
    S,
    _cancel_pending_approvals,
    _enqueue,
    _final_outcome,
    _queue_next,
    finish_run,
    note_no_run,
)
from playbooks.engine_step import Heartbeat, _approvers_for, _record, _request_approval, execute_step  # noqa: F401
from playbooks.models import PlaybookRun, Rule, StepRun
from playbooks.rules import decide, playbook_steps
from playbooks.services.correlation import waits_for_parent

log = structlog.get_logger(__name__)

# Minimum quiet time before the reconciler touches a run that has no step in flight.
STALLED_RUN_GRACE = timedelta(seconds=60)


# --- Starting runs -----------------------------------------------------------------------


def start_run_for_incident(incident: Any) -> PlaybookRun | None:
    """Match the rules and create the run; call inside the transaction that opened the incident."""
    if PlaybookRun.objects.filter(incident=incident).exclude(state=R.FINISHED).exists():
        metrics.RULE_MATCHES.labels("active_run").inc()
        log.info("playbook_not_started", incident=incident.pk, reason="a run is already active")
        return None
    held = waits_for_parent(incident)  # a correlated child waits for its cause's run
    if held is not None:
        metrics.RULE_MATCHES.labels("correlated").inc()
        note_no_run(incident, held)
        return None
    rule, why = decide(incident)
    if rule is None:
        metrics.RULE_MATCHES.labels(why["code"]).inc()
        log.info("playbook_not_started", incident=incident.pk, reason=why["text"])
        note_no_run(incident, why)
        return None
    return create_run(incident, rule, reason=why["text"])


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
    quiet_since = now - timedelta(seconds=settings.AIOPS_STEP_REQUEUE_AFTER)
    # A step a maintenance window holds is due at `not_before`, not lost before then.
    lost_message = Q(state=S.QUEUED, updated_at__lt=quiet_since) & (Q(not_before__isnull=True)
                                                                     | Q(not_before__lt=quiet_since))
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
