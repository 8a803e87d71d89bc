"""What the agent remembers of a workload: actions that did not hold, and outcome figures.

Before a MEDIUM/HIGH step asks for an approval, `repeated_failures` looks at the same rule's
earlier runs on the same workload inside the rule's escalation window: a run whose action ended
`fix_did_not_hold`, or whose incident came back within the window after it, counts once. At
`rule.escalate_after` of them the engine does not ask for the same action again; it hands off
with the history in one sentence.

`outcome_figures` counts runs by outcome and the median time from an incident opening to its
recovery, per rule or per workload, for the admin and the incident page.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from playbooks.models import Incident, PlaybookRun, StepRun

ACTION_WORDS = {
    "restart_pod": "restarted a pod",
    "restart_workload": "restarted the workload",
    "restart_deployment": "restarted the deployment",
    "patch_memory_limit": "raised the memory limit",
    "rollback_deployment": "rolled back",
    "set_hpa_max_replicas": "raised the autoscaler's maximum",
    "scale_deployment": "scaled",
    "cordon_node": "cordoned the node",
    "drain_node": "drained the node",
}
FIXED = ("resolved", "mitigated", "completed")


@dataclass(frozen=True)
class Failure:
    run: PlaybookRun
    came_back_after: timedelta | None  # None: the fix did not hold (verify said so)


def _same_workload(incident: Incident) -> dict[str, Any]:
    return {"cluster_id": incident.cluster_id, "workload_kind": incident.workload_kind,
            "namespace": incident.namespace, "workload_name": incident.workload_name}


def repeated_failures(run: PlaybookRun, tool: str) -> list[Failure]:
    """Earlier runs of this run's rule on the same workload, inside the rule's window, whose
    `tool` step succeeded and yet the fault stayed or came back."""
    rule = run.rule
    if rule is None:
        return []
    incident = run.incident
    window = timedelta(seconds=rule.escalation_window_seconds)
    since = timezone.now() - window
    done = StepRun.objects.filter(tool=tool, state=StepRun.State.SUCCEEDED).values("run_id")
    earlier = (
        PlaybookRun.objects.filter(
            rule=rule, state=PlaybookRun.State.FINISHED, finished_at__gte=since, pk__in=done,
            **{f"incident__{key}": value for key, value in _same_workload(incident).items()},
        )
        .exclude(pk=run.pk)
        .order_by("created_at")
    )
    failures: list[Failure] = []
    for before in earlier:
        if before.outcome == PlaybookRun.Outcome.FIX_DID_NOT_HOLD:
            failures.append(Failure(before, None))
        elif before.outcome in FIXED and before.finished_at is not None:
            came_back = (
                Incident.objects.filter(**_same_workload(incident), opened_at__gt=before.finished_at,
                                        opened_at__lte=before.finished_at + window)
                .order_by("opened_at").values_list("opened_at", flat=True).first()
            )
            if came_back is not None:
                failures.append(Failure(before, came_back - before.finished_at))
    return failures


def _minutes(delta: timedelta) -> str:
    minutes = max(1, round(delta.total_seconds() / 60))
    return f"~{minutes} minute{'s' if minutes != 1 else ''}"


def history_sentence(incident: Incident, tool: str, failures: list[Failure]) -> str:
    """"restarted the workload 3 times since 09:10 UTC (runs #4, #7, #9); each time the crash loop
    came back within ~10 minutes"."""
    what = (incident.primary_type or incident.alertname or "fault").replace("_", " ")
    first = min(f.run.created_at for f in failures)
    runs = ", ".join(f"#{f.run.pk}" for f in failures)
    gaps = [f.came_back_after for f in failures if f.came_back_after is not None]
    held_not = len(failures) - len(gaps)
    if not gaps:
        tail = f"each time the {what} went on (the fix did not hold)"
    elif not held_not:
        tail = f"each time the {what} came back within {_minutes(max(gaps))}"
    else:
        tail = f"each time the fix did not hold or the {what} came back within {_minutes(max(gaps))}"
    action = ACTION_WORDS.get(tool, f"ran {tool}")
    return f"{action} {len(failures)} times since {first:%H:%M} UTC (runs {runs}); {tail}"


# --- Figures -----------------------------------------------------------------------------


def outcome_figures(runs: QuerySet[PlaybookRun]) -> dict[str, Any]:
    """Runs, resolved, mitigated, fix_did_not_hold, handed_off, cancelled, and the median minutes
    from an incident opening to its recovery (resolved/mitigated runs)."""
    rows = list(runs.filter(state=PlaybookRun.State.FINISHED).values_list("outcome", "finished_at", "incident__opened_at"))
    figures: dict[str, Any] = {"runs": len(rows)}
    for outcome in ("resolved", "mitigated", "fix_did_not_hold", "handed_off", "cancelled"):
        figures[outcome] = sum(1 for row in rows if row[0] == outcome)
    recoveries = [(finished - opened).total_seconds() / 60 for outcome, finished, opened in rows
                  if outcome in ("resolved", "mitigated") and finished and opened]
    figures["median_minutes_to_recovery"] = round(statistics.median(recoveries), 1) if recoveries else None
    return figures


def figures_text(figures: dict[str, Any]) -> str:
    if not figures.get("runs"):
        return "no runs yet"
    parts = [f"{figures['runs']} run{'s' if figures['runs'] != 1 else ''}"]
    for key, label in (("resolved", "resolved"), ("mitigated", "mitigated"), ("fix_did_not_hold", "fix did not hold"),
                       ("handed_off", "handed off"), ("cancelled", "cancelled")):
        if figures.get(key):
            parts.append(f"{figures[key]} {label}")
    median = figures.get("median_minutes_to_recovery")
    if median is not None:
        parts.append(f"median {median:g} min from incident to recovery")
    return ", ".join(parts)


def workload_runs(incident: Incident) -> QuerySet[PlaybookRun]:
    return PlaybookRun.objects.filter(**{f"incident__{k}": v for k, v in _same_workload(incident).items()})


def last_fix(incident: Incident) -> str:
    """What fixed this workload last time, for the RCA report: "" when nothing did."""
    run = (
        workload_runs(incident).filter(outcome__in=("resolved", "mitigated")).exclude(incident=incident)
        .order_by("-finished_at").first()
    )
    if run is None or run.finished_at is None:
        return ""
    actions = [ACTION_WORDS.get(tool, tool) for tool in run.steps.filter(
        state=StepRun.State.SUCCEEDED, risk__in=("MEDIUM", "HIGH")).order_by("order").values_list("tool", flat=True)]
    when = f"Last time ({run.finished_at:%Y-%m-%d %H:%M} UTC, run #{run.pk} of {run.playbook_name})"
    if not actions:
        return f"{when} this workload was {run.outcome} without an action."
    return f"{when} this workload was {run.outcome} after the agent {' and '.join(actions)}."
