"""Alertmanager alerts join the same Incident/ClusterEvent path as poll findings.

An alert whose labels name a workload (``deployment``, ``statefulset``, ``daemonset``,
``cronjob``, ``job_name``, ``pod``, ``node``; ``namespace``; ``cluster``) lands on that
workload's incident, so a KubePodCrashLooping alert and the poll's crash_loop finding are one
incident. An alert that names no workload gets an incident keyed by its fingerprint.

Idempotent per fingerprint + startsAt (+ status): each delivery is recorded as a ClusterEvent
whose unique ``dedup_key`` says so, and an alert whose key is already stored changes nothing,
so Alertmanager's redelivery of a batch is a no-op. A batch is one transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import structlog
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from psycopg import errors as psycopg_errors

from k8s.models import Cluster
from playbooks import metrics
from playbooks.models import ClusterEvent, Incident
from playbooks.services.incidents import announce_opened, build_event, open_incident, resolve_incident, worst_severity

log = structlog.get_logger(__name__)

# Generated names use Kubernetes' "safe" alphabet (no vowels, no 0/1/3): <deployment>-<pod-template-hash>-<suffix>.
_SAFE = "bcdfghjklmnpqrstvwxz2456789"
_DEPLOYMENT_POD = re.compile(rf"^(?P<owner>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-[{_SAFE}]{{6,10}}-[{_SAFE}]{{5}}$")
_SEVERITIES = {"critical": "critical", "error": "critical", "page": "critical", "warning": "warning",
               "warn": "warning", "info": "info", "none": "info"}


def dedup_key(alert: dict[str, Any]) -> str:
    starts = alert["startsAt"]
    starts_text = starts.isoformat() if isinstance(starts, datetime) else str(starts)
    return f"{alert['fingerprint']}:{starts_text}:{alert['status']}"


def alert_workload(labels: dict[str, str]) -> tuple[str, str, str] | None:
    """The workload an alert's labels name (kube-state-metrics conventions), or None."""
    namespace = labels.get("namespace", "")
    for label, kind in (("deployment", "Deployment"), ("statefulset", "StatefulSet"), ("daemonset", "DaemonSet"),
                        ("cronjob", "CronJob"), ("job_name", "Job")):
        if labels.get(label) and namespace:
            return kind, namespace, labels[label]
    pod = labels.get("pod")
    if pod and namespace:
        match = _DEPLOYMENT_POD.match(pod)
        if match:
            return "Deployment", namespace, match.group("owner")
        return "Pod", namespace, pod
    if labels.get("node"):
        return "Node", "", labels["node"]
    return None


def alert_severity(labels: dict[str, str]) -> str:
    return _SEVERITIES.get(labels.get("severity", "").lower(), "warning")


@dataclass
class AlertIngestResult:
    stored: int = 0
    duplicates: int = 0
    opened: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)


class _Clusters:
    """Cluster by the alert's `cluster` label; the default cluster when it has none."""

    def __init__(self) -> None:
        self._by_name: dict[str, Cluster | None] = {}
        self._default: Cluster | None | bool = False

    def get(self, name: str) -> Cluster | None:
        if not name:
            if self._default is False:
                self._default = Cluster.objects.filter(is_default=True).first()
            return self._default  # type: ignore[return-value]
        if name not in self._by_name:
            self._by_name[name] = Cluster.objects.filter(name=name).first()
        return self._by_name[name]


def ingest_alerts(alerts: list[dict[str, Any]], *, now: datetime | None = None) -> AlertIngestResult:
    """Record a validated Alertmanager batch; one transaction for the whole batch."""
    for attempt in range(1, 4):
        try:
            return _ingest(alerts, now or timezone.now())
        except IntegrityError:
            # The same batch delivered twice at the same moment: the other delivery stored these
            # alerts first (unique dedup_key). Replaying ours now finds them and changes nothing.
            log.info("alert_batch_replayed", alerts=len(alerts), attempt=attempt)
        except OperationalError as exc:
            # Two batches opening and touching the same incidents in different orders: PostgreSQL
            # breaks the deadlock by aborting one; the batch rolled back whole, so run it again.
            if not isinstance(exc.__cause__, psycopg_errors.DeadlockDetected) or attempt == 3:
                raise
            log.info("alert_batch_deadlock_retried", alerts=len(alerts), attempt=attempt)
    return _ingest(alerts, now or timezone.now())


def _update_touched(incidents: list[Incident]) -> None:
    """One ``UPDATE ... FROM (VALUES ...)`` for every incident the batch touched.

    Django's bulk_update builds a CASE WHEN per field and row, which cost ~20x this statement's
    time for a batch of 50 (measured by bench/alerts.py); the rows are locked already.
    """
    table = Incident._meta.db_table
    rows = ", ".join(["(%s::bigint, %s::jsonb, %s, %s, %s::jsonb, %s::timestamptz, %s::integer)"] * len(incidents))
    params: list[Any] = []
    for incident in incidents:
        params += [incident.pk, orjson.dumps(incident.alerts).decode(), incident.alertname, incident.severity,
                   orjson.dumps(incident.evidence, default=str).decode(), incident.last_seen_at, incident.count]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS i SET alerts = v.alerts, alertname = v.alertname, severity = v.severity, "  # noqa: S608 (our table name)
            "evidence = v.evidence, last_seen_at = v.last_seen_at, count = v.count "
            f"FROM (VALUES {rows}) AS v(id, alerts, alertname, severity, evidence, last_seen_at, count) WHERE i.id = v.id",
            params,
        )


def _ingest(alerts: list[dict[str, Any]], now: datetime) -> AlertIngestResult:
    result = AlertIngestResult()
    with transaction.atomic():
        keys = [dedup_key(alert) for alert in alerts]
        seen = set(ClusterEvent.objects.filter(dedup_key__in=keys).values_list("dedup_key", flat=True))
        clusters = _Clusters()
        fresh: list[tuple[str, dict[str, Any], Cluster | None, tuple[str, str, str] | None, tuple[Any, ...]]] = []
        for key, alert in zip(keys, alerts, strict=True):
            if key in seen:
                result.duplicates += 1
                metrics.ALERTS_RECEIVED.labels(alert["status"], "duplicate").inc()
                continue
            seen.add(key)
            cluster = clusters.get(alert["labels"].get("cluster", ""))
            workload = alert_workload(alert["labels"])
            lookup = (cluster.pk if cluster else None, *(workload or ("", "", "")), "" if workload else alert["fingerprint"])
            fresh.append((key, alert, cluster, workload, lookup))
        if not fresh:
            return result
        incidents = _lock_open_incidents([(key, alert, cluster) for key, alert, cluster, _, _ in fresh])

        # Phase 1: open what is missing, in one global order (sorted keys), so concurrent batches
        # that open the same incidents queue behind each other instead of deadlocking crosswise.
        created: dict[tuple[Any, ...], str] = {}  # lookup -> the dedup key of the alert that opened it
        first_firing: dict[tuple[Any, ...], tuple[str, dict[str, Any], Cluster | None, tuple[str, str, str] | None]] = {}
        for key, alert, cluster, workload, lookup in fresh:
            if alert["status"] == "firing" and lookup not in incidents:
                first_firing.setdefault(lookup, (key, alert, cluster, workload))
        for lookup in sorted(first_firing, key=repr):
            key, alert, cluster, workload = first_firing[lookup]
            incident, was_created = _open_for_alert(cluster, workload, alert, now)
            incidents[lookup] = incident
            if was_created:
                created[lookup] = key
                result.opened.append(incident.pk)
                announce_opened(incident)

        # Phase 2: apply every alert in delivery order, in memory; one bulk UPDATE at the end.
        touched: dict[int, Incident] = {}
        events: list[ClusterEvent] = []
        for key, alert, cluster, workload, lookup in fresh:
            incident = incidents.get(lookup)
            if alert["status"] == "firing":
                assert incident is not None  # phase 1 opened it
                if created.get(lookup) != key:  # the opening alert is already in the new row
                    _apply_firing(incident, alert, now)
                    touched[incident.pk] = incident
                events.append(_alert_event(incident, ClusterEvent.Kind.ALERT_FIRED, alert, key, cluster, workload))
            else:
                events.append(_alert_event(incident, ClusterEvent.Kind.ALERT_RESOLVED, alert, key, cluster, workload))
                if incident is not None:
                    incident.alerts = {fp: n for fp, n in (incident.alerts or {}).items() if fp != alert["fingerprint"]}
                    incident.last_seen_at = now
                    touched[incident.pk] = incident
                    if not incident.alerts and not incident.finding_types:
                        ClusterEvent.objects.bulk_create(events)  # the alert's own event goes first on the timeline
                        events = []
                        touched.pop(incident.pk)
                        resolve_incident(incident, now=now, reason=f"alert {alert['labels']['alertname']} resolved")
                        result.resolved.append(incident.pk)
                        incidents.pop(lookup)
            result.stored += 1
            metrics.ALERTS_RECEIVED.labels(alert["status"], "stored").inc()
        if touched:
            _update_touched(list(touched.values()))
        ClusterEvent.objects.bulk_create(events)
    log.info("alert_batch_ingested", stored=result.stored, duplicates=result.duplicates, opened=len(result.opened),
             resolved=len(result.resolved))
    return result


def _alert_event(incident: Incident | None, kind: str, alert: dict[str, Any], key: str, cluster: Cluster | None,
                 workload: tuple[str, str, str] | None) -> ClusterEvent:
    labels = alert["labels"]
    return build_event(
        incident, cluster, kind, alertname=labels["alertname"], severity=alert_severity(labels), message=_summary(alert),
        workload=workload or ("", "", ""), dedup_key=key,
        data={"fingerprint": alert["fingerprint"], "labels": labels, "annotations": alert.get("annotations") or {},
              "startsAt": alert["startsAt"].isoformat(), "generatorURL": alert.get("generatorURL", "")},
    )


def _summary(alert: dict[str, Any]) -> str:
    annotations = alert.get("annotations") or {}
    return annotations.get("summary") or annotations.get("description") or annotations.get("message") or alert["labels"]["alertname"]


def _lock_open_incidents(targets: list[tuple[str, dict[str, Any], Cluster | None]]) -> dict[tuple[Any, ...], Incident]:
    """All open incidents this batch may touch, locked in one query (in id order: no deadlocks)."""
    names: set[str] = set()
    fingerprints: set[str] = set()
    for _, alert, _cluster in targets:
        workload = alert_workload(alert["labels"])
        if workload:
            names.add(workload[2])
        else:
            fingerprints.add(alert["fingerprint"])
    if not names and not fingerprints:
        return {}
    query = Q(fingerprint="", workload_name__in=names) | Q(fingerprint__in=fingerprints) if fingerprints else Q(
        fingerprint="", workload_name__in=names)
    found = Incident.objects.select_for_update().filter(query, state=Incident.State.OPEN).order_by("pk")
    return {(i.cluster_id, i.workload_kind, i.namespace, i.workload_name, i.fingerprint): i for i in found}


def _evidence_entry(alert: dict[str, Any]) -> dict[str, Any]:
    return {"labels": alert["labels"], "annotations": alert.get("annotations") or {},
            "startsAt": alert["startsAt"].isoformat(), "fingerprint": alert["fingerprint"]}


def _open_for_alert(cluster: Cluster | None, workload: tuple[str, str, str] | None, alert: dict[str, Any],
                    now: datetime) -> tuple[Incident, bool]:
    alertname = alert["labels"]["alertname"]
    incident, created = open_incident(
        cluster, workload or ("", "", ""), now=now, source=Incident.Source.ALERTMANAGER,
        fingerprint="" if workload else alert["fingerprint"],
        fields={"alertname": alertname, "alerts": {alert["fingerprint"]: alertname},
                "severity": alert_severity(alert["labels"]), "title": _summary(alert)[:500],
                "evidence": {f"alert:{alertname}": _evidence_entry(alert)}},
    )
    return incident, created


def _apply_firing(incident: Incident, alert: dict[str, Any], now: datetime) -> None:
    alertname = alert["labels"]["alertname"]
    incident.alerts = {**(incident.alerts or {}), alert["fingerprint"]: alertname}
    incident.alertname = incident.alertname or alertname
    incident.severity = worst_severity([incident.severity, alert_severity(alert["labels"])])
    incident.evidence = {**(incident.evidence or {}), f"alert:{alertname}": _evidence_entry(alert)}
    incident.last_seen_at = now
    incident.count += 1
