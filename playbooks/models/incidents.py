"""ClusterEvent and Incident (the watch loop's room).

An `Incident` is about a workload (Deployment, StatefulSet, DaemonSet, CronJob/Job, bare Pod,
Node, or the cluster itself), never a pod name: pods are renamed on every restart. At most one
incident per (cluster, workload) is open at a time, or per Alertmanager fingerprint for an alert
whose labels name no workload; two unique partial indexes enforce it, so any number of workers
can ingest at once and the loser of a race finds the winner's row.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Q

__all__ = ["ClusterEvent", "Incident"]


class Incident(models.Model):
    class State(models.TextChoices):
        OPEN = "open", "open"
        RESOLVED = "resolved", "resolved"

    class Source(models.TextChoices):
        POLL = "poll", "cluster poll"
        WATCH = "watch", "watch stream"
        ALERTMANAGER = "alertmanager", "Alertmanager"

    class Severity(models.TextChoices):
        CRITICAL = "critical", "critical"
        WARNING = "warning", "warning"
        INFO = "info", "info"

    cluster = models.ForeignKey("k8s.Cluster", null=True, blank=True, on_delete=models.CASCADE, related_name="incidents")
    workload_kind = models.CharField(max_length=63, blank=True, help_text="Deployment, StatefulSet, Node, Cluster, ...")
    namespace = models.CharField(max_length=253, blank=True)
    workload_name = models.CharField(max_length=253, blank=True)
    # Set only for an Alertmanager alert whose labels name no workload: the alert is the key.
    fingerprint = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.POLL)

    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    primary_type = models.CharField(max_length=40, blank=True, help_text="The most specific current finding type.")
    finding_types = models.JSONField(default=list, blank=True, help_text="Current finding types (poll).")
    alertname = models.CharField(max_length=200, blank=True)
    # fingerprint -> alertname of the Alertmanager alerts firing for this incident now.
    alerts = models.JSONField(default=dict, blank=True)
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.WARNING)
    title = models.CharField(max_length=500, blank=True)
    affected_pods = models.JSONField(default=list, blank=True)
    evidence = models.JSONField(default=dict, blank=True, help_text="Latest evidence, by finding type or alert.")
    rca_report = models.JSONField(null=True, blank=True)
    # Why no playbook ran (set when the incident opened without a run): data, so every surface
    # renders it in its own words -- {"code": "cooldown"|"no_match"|"auto_run_off"|"budget"|
    # "silenced"|..., "text": "...", "rule": ..., "run": ..., "until": ISO time, ...}.
    no_run_reason = models.JSONField(null=True, blank=True)
    # Correlation (playbooks.services.correlation): the incident whose cause explains this one (a
    # workload whose failing pods are all on a NotReady node -> the node's incident), and why, as
    # data: {"cause": "not_ready_node"|"bad_rollout"|"alert", "text": "...", "node": ..., "pods": n}.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children",
                               help_text="The incident whose cause explains this one (correlation).")
    correlation = models.JSONField(null=True, blank=True, help_text="Why this incident is a child of its parent.")
    # The silence that holds this incident's notifications and runs (playbooks.silences).
    silenced_by = models.ForeignKey("playbooks.Silence", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="incidents")

    # Opened by an Alertmanager batch whose receivers (rules, notifications, correlation) have not
    # run yet: they run in a task after the batch commits (playbooks.services.announce), or in the
    # sweep if that task's message was lost, or first thing when the incident is resolved.
    announce_pending = models.BooleanField(default=False, db_default=False, editable=False)

    opened_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    count = models.PositiveIntegerField(default=1, help_text="Polls (or alert deliveries) that saw it.")
    absent_polls = models.PositiveIntegerField(default=0, help_text="Consecutive polls without its findings.")

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["cluster", "workload_kind", "namespace", "workload_name"],
                condition=Q(state="open", fingerprint=""),
                nulls_distinct=False,
                name="playbooks_one_open_incident_per_workload",
            ),
            models.UniqueConstraint(
                fields=["fingerprint"],
                condition=Q(state="open") & ~Q(fingerprint=""),
                name="playbooks_one_open_incident_per_alert",
            ),
            models.CheckConstraint(
                condition=Q(state="open", resolved_at__isnull=True) | Q(state="resolved", resolved_at__isnull=False),
                name="playbooks_incident_resolved_at_matches_state",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "cluster"], name="playbooks_incident_state_idx"),
            models.Index(fields=["primary_type"], name="playbooks_incident_type_idx"),
            models.Index(fields=["opened_at"], condition=Q(announce_pending=True), name="playbooks_incident_unann_idx"),
            # Storm control counts a cluster's incidents opened in its window, per incident opened.
            models.Index(fields=["cluster", "opened_at"], name="playbooks_incident_opened_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.primary_type or self.alertname} {self.workload_key}"

    @property
    def workload_key(self) -> str:
        """``Kind/namespace/name``, as `k8s.detectors.Finding.workload_key` writes it."""
        if self.fingerprint and not self.workload_name:
            return f"Alert//{self.fingerprint}"
        return f"{self.workload_kind}/{self.namespace}/{self.workload_name}"

    @property
    def is_open(self) -> bool:
        return self.state == self.State.OPEN


class AppendOnlyError(Exception):
    pass


class ClusterEvent(models.Model):
    """Append-only log of everything seen: rows are inserted, never updated or deleted by us."""

    class Kind(models.TextChoices):
        DETECTED = "detected", "detected"
        RECURRED = "recurred", "recurred"
        CHANGED = "changed", "changed"
        RESOLVED = "resolved", "resolved"
        ALERT_FIRED = "alert_fired", "alert fired"
        ALERT_RESOLVED = "alert_resolved", "alert resolved"
        UNREACHABLE = "unreachable", "cluster unreachable"
        REACHABLE = "reachable", "cluster reachable again"
        CORRELATED = "correlated", "linked to its cause"
        SILENCED = "silenced", "silenced"
        SILENCE_ENDED = "silence_ended", "silence ended"
        MAINTENANCE = "maintenance", "in maintenance"

    cluster = models.ForeignKey("k8s.Cluster", null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    incident = models.ForeignKey(Incident, null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    finding_type = models.CharField(max_length=40, blank=True)
    alertname = models.CharField(max_length=200, blank=True)
    workload_kind = models.CharField(max_length=63, blank=True)
    namespace = models.CharField(max_length=253, blank=True)
    workload_name = models.CharField(max_length=253, blank=True)
    severity = models.CharField(max_length=16, blank=True)
    message = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    # Alert deliveries: "<fingerprint>:<startsAt>:<status>" -- a redelivered batch inserts nothing.
    dedup_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["cluster", "kind"], name="playbooks_event_cluster_kind")]

    def __str__(self) -> str:
        return f"{self.kind} {self.finding_type or self.alertname} {self.workload_kind}/{self.namespace}/{self.workload_name}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise AppendOnlyError("ClusterEvent rows are append-only")
        super().save(*args, **kwargs)
