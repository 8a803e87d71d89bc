"""Alertmanager alerts join the same Incident/ClusterEvent path as poll findings.

An alert whose labels name a workload (``deployment``, ``statefulset``, ``daemonset``,
``cronjob``, ``job_name``, ``pod``, ``node``; ``namespace``; ``cluster``) lands on that
workload's incident, so a KubePodCrashLooping alert and the poll's crash_loop finding are one
incident. An alert that names no workload gets an incident keyed by its fingerprint.

Idempotent per fingerprint + startsAt (+ status): each delivery is recorded as a ClusterEvent
whose unique ``dedup_key`` says so, and an alert whose key is already stored changes nothing,
so Alertmanager's redelivery of a batch is a no-op. A batch's events and incident changes are one
transaction; the incidents a batch of firing alerts opens are inserted and committed just before
it, in a short transaction of their own, and announced by a task (playbooks.services.announce).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import structlog
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Model, Q
from django.utils import timezone
from psycopg import errors as psycopg_errors

from k8s.models import Cluster
from k8s.names import is_dns1123_label, is_dns1123_subdomain
from playbooks import metrics
from playbooks.models import ClusterEvent, Incident
from playbooks.services.announce import announce_after_commit
from playbooks.services.incidents import (
    announce_ingested,
    announce_resolved,
    build_event,
    open_incident,
    worst_severity,
)

log = structlog.get_logger(__name__)

# Generated names use Kubernetes' "safe" alphabet (no vowels, no 0/1/3): <deployment>-<pod-template-hash>-<suffix>.
_SAFE = "bcdfghjklmnpqrstvwxz2456789"
_DEPLOYMENT_POD = re.compile(rf"^(?P<owner>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-[{_SAFE}]{{6,10}}-[{_SAFE}]{{5}}$")
_ALERTNAME_MAX = Incident._meta.get_field("alertname").max_length
_SEVERITIES = {"critical": "critical", "error": "critical", "page": "critical", "warning": "warning",
               "warn": "warning", "info": "info", "none": "info"}


def dedup_key(alert: dict[str, Any]) -> str:
    starts = alert["startsAt"]
    starts_text = starts.isoformat() if isinstance(starts, datetime) else str(starts)
    return f"{alert['fingerprint']}:{starts_text}:{alert['status']}"


def alert_workload(labels: dict[str, str]) -> tuple[str, str, str] | None:
    """The workload an alert's labels name (kube-state-metrics conventions), or None.

    Label values are free text (Prometheus bounds neither length nor alphabet); only a valid
    Kubernetes name (DNS-1123, namespace <= 63, object <= 253 characters) names a workload. An
    alert whose labels name none is keyed by its fingerprint like any other such alert, and its
    labels are kept whole in the event's and the incident's JSON: nothing is cut or lost.
    """
    namespace = labels.get("namespace", "")
    namespaced = is_dns1123_label(namespace)
    for label, kind in (("deployment", "Deployment"), ("statefulset", "StatefulSet"), ("daemonset", "DaemonSet"),
                        ("cronjob", "CronJob"), ("job_name", "Job")):
        if namespaced and is_dns1123_subdomain(labels.get(label)):
            return kind, namespace, labels[label]
    pod = labels.get("pod")
    if namespaced and is_dns1123_subdomain(pod):
        match = _DEPLOYMENT_POD.fullmatch(pod)
        if match:
            return "Deployment", namespace, match.group("owner")
        return "Pod", namespace, pod
    if is_dns1123_subdomain(labels.get("node")):
        return "Node", "", labels["node"]
    return None


def indexed_alertname(alert: dict[str, Any]) -> str:
    """The alert's name as the `alertname` columns hold it: whole up to their 200 characters,
    else cut with a marker (the whole name stays in the labels, the evidence and `alerts`)."""
    name = alert["labels"]["alertname"]
    return name if len(name) <= _ALERTNAME_MAX else name[:_ALERTNAME_MAX - 1] + "…"


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


class _Replayed(Exception):
    """Another delivery of the same alerts committed between our dedup read and our insert."""


def ingest_alerts(alerts: list[dict[str, Any]], *, now: datetime | None = None) -> AlertIngestResult:
    """Record a validated Alertmanager batch; one transaction for the whole batch."""
    for attempt in range(1, 4):
        try:
            return _ingest(alerts, now or timezone.now())
        except (IntegrityError, _Replayed, _IncidentClosed):
            # The same batch delivered twice at the same moment: the other delivery stored these
            # alerts first (unique dedup_key). Replaying ours now finds them and changes nothing.
            # Or an incident read as open was resolved meanwhile: replaying opens a new one.
            log.info("alert_batch_replayed", alerts=len(alerts), attempt=attempt)
        except OperationalError as exc:
            # Two batches opening and touching the same incidents in different orders: PostgreSQL
            # breaks the deadlock by aborting one; the batch rolled back whole, so run it again.
            if not isinstance(exc.__cause__, psycopg_errors.DeadlockDetected) or attempt == 3:
                raise
            log.info("alert_batch_deadlock_retried", alerts=len(alerts), attempt=attempt)
    return _ingest(alerts, now or timezone.now())


def _recordset(model: type[Model], columns: list[str]) -> str:
    """``r(col type, ...)`` for jsonb_to_recordset, typed as the model's columns are."""
    fields = {f.column: f for f in model._meta.concrete_fields}
    return ", ".join(f"{column} {fields[column].db_type(connection)}" for column in columns)


def _json_rows(rows: list[dict[str, Any]]) -> str:
    # One JSON document for the whole batch: a single parameter to send, whatever the batch size
    # (psycopg's client-side quoting of 50 rows x 14 values cost more than PostgreSQL's insert).
    return orjson.dumps(rows, default=str).decode()


_EVENT_COLUMNS = [f.column for f in ClusterEvent._meta.concrete_fields if not f.primary_key]
_EVENT_SQL = (
    f"INSERT INTO {ClusterEvent._meta.db_table} ({', '.join(_EVENT_COLUMNS)}) "  # noqa: S608 (our table and columns)
    f"SELECT {', '.join('r.' + c for c in _EVENT_COLUMNS)} "
    f"FROM jsonb_to_recordset(%s::jsonb) AS r({_recordset(ClusterEvent, _EVENT_COLUMNS)}, ord bigint) "
    "ORDER BY r.ord ON CONFLICT (dedup_key) DO NOTHING"
)
_TOUCH_COLUMNS = ["alerts", "alertname", "severity", "evidence", "last_seen_at", "count", "state", "resolved_at"]
_TOUCH_SQL = (
    f"UPDATE {Incident._meta.db_table} AS i SET {', '.join(f'{c} = v.{c}' for c in _TOUCH_COLUMNS)} "  # noqa: S608
    f"FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, {_recordset(Incident, _TOUCH_COLUMNS)}) WHERE i.id = v.id"
)


def _insert_events(events: list[ClusterEvent]) -> None:
    """All the batch's events in one INSERT, in list order (ids follow the timeline).

    ON CONFLICT DO NOTHING on the dedup key, then a count: fewer rows than sent means a
    concurrent delivery of the same alerts committed after our dedup read, so this batch's
    incident updates would count them twice -- roll back and replay (it then finds them stored).
    """
    if not events:
        return
    fields = [f for f in ClusterEvent._meta.concrete_fields if not f.primary_key]
    rows = [{"ord": n, **{f.column: f.pre_save(event, True) for f in fields}} for n, event in enumerate(events)]
    with connection.cursor() as cursor:
        cursor.execute(_EVENT_SQL, [_json_rows(rows)])
        inserted = cursor.rowcount
    if inserted != len(events):
        raise _Replayed(f"{len(events) - inserted} of {len(events)} alert events were stored by another delivery")


def _update_touched(incidents: list[Incident]) -> None:
    """One UPDATE for every incident the batch touched (the rows are locked already).

    Django's bulk_update builds a CASE WHEN per field and row, which cost ~20x this statement's
    time for a batch of 50 (measured by bench/alerts.py).
    """
    rows = [{"id": i.pk, **{c: getattr(i, c) for c in _TOUCH_COLUMNS}} for i in incidents]
    with connection.cursor() as cursor:
        cursor.execute(_TOUCH_SQL, [_json_rows(rows)])


def _lookup_clusters(alerts: list[dict[str, Any]]) -> _Clusters:
    """Every cluster the batch names, and the default one, in one query."""
    names = {alert["labels"].get("cluster", "") for alert in alerts} - {""}
    clusters = _Clusters()
    clusters._default = None
    for cluster in Cluster.objects.filter(Q(is_default=True) | Q(name__in=names)):
        if cluster.is_default:
            clusters._default = cluster
        clusters._by_name[cluster.name] = cluster
    for name in names:
        clusters._by_name.setdefault(name, None)
    return clusters


_INCIDENT_FIELDS = [f for f in Incident._meta.concrete_fields if not f.primary_key]
_INCIDENT_KEY = ["cluster_id", "workload_kind", "namespace", "workload_name", "fingerprint"]
_OPEN_SQL = (
    f"INSERT INTO {Incident._meta.db_table} ({', '.join(f.column for f in _INCIDENT_FIELDS)}) "  # noqa: S608 (our table)
    f"SELECT {', '.join('r.' + f.column for f in _INCIDENT_FIELDS)} FROM jsonb_to_recordset(%s::jsonb) "
    f"AS r({_recordset(Incident, [f.column for f in _INCIDENT_FIELDS])}, ord bigint) ORDER BY r.ord "
    f"ON CONFLICT DO NOTHING RETURNING id, {', '.join(_INCIDENT_KEY)}"
)


def _open_missing(first_firing: dict[tuple[Any, ...], tuple[str, dict[str, Any], Cluster | None, tuple[str, str, str] | None]],
                  now: datetime, *, lock: bool) -> list[tuple[tuple[Any, ...], Incident, bool]]:
    """Open the batch's missing incidents with one INSERT, in one global order (sorted keys).

    Concurrent batches opening the same incidents queue behind each other instead of
    deadlocking crosswise. ON CONFLICT DO NOTHING: an incident another delivery opened first
    (one of the unique partial indexes refuses ours) is not ours to announce; it is read in one
    more query -- locked when the caller applies alerts in memory (`lock`), not when a merging
    UPDATE locks every row in id order later (an early lock out of that order could deadlock).
    """
    order = sorted(first_firing, key=repr)
    if not order:
        return []
    fresh = {lookup: _new_incident(*first_firing[lookup][1:], now) for lookup in order}
    rows = [{"ord": n, **{f.column: f.pre_save(fresh[lookup], True) for f in _INCIDENT_FIELDS}}
            for n, lookup in enumerate(order)]
    with connection.cursor() as cursor:
        cursor.execute(_OPEN_SQL, [_json_rows(rows)])
        returned = cursor.fetchall()
    opened: dict[tuple[Any, ...], Incident] = {}
    for pk, *key in returned:
        incident = fresh[tuple(key)]
        incident.pk = pk
        incident._state.adding = False
        opened[tuple(key)] = incident
    if len(opened) == len(order):
        return [(lookup, opened[lookup], True) for lookup in order]
    log.info("alert_incidents_opened_concurrently", incidents=len(order) - len(opened))
    others = [lookup for lookup in order if lookup not in opened]
    query = Q()
    for cluster_id, kind, namespace, name, fingerprint in others:
        query |= Q(fingerprint=fingerprint) if fingerprint else Q(
            cluster_id=cluster_id, workload_kind=kind, namespace=namespace, workload_name=name, fingerprint="")
    incidents = Incident.objects.filter(query, state=Incident.State.OPEN).order_by("pk")
    if lock:
        incidents = incidents.select_for_update(no_key=True)
    found = {(i.cluster_id, i.workload_kind, i.namespace, i.workload_name, i.fingerprint): i for i in incidents}
    result = []
    for lookup in order:
        if lookup in opened:
            result.append((lookup, opened[lookup], True))
        elif lookup in found:
            result.append((lookup, found[lookup], False))
        else:  # opened and already resolved by the other delivery: this alert opens a new one
            result.append((lookup, *_open_for_alert(*first_firing[lookup][1:], now)))
    return result


def _ingest(alerts: list[dict[str, Any]], now: datetime) -> AlertIngestResult:
    """A constant number of queries per batch (plus the signal receivers' own, per incident
    resolved): dedup read, clusters, open incidents, one INSERT of the missing incidents, one
    INSERT of the events, one UPDATE of the touched ones. The incidents it opens are announced
    by a task after commit (playbooks.services.announce)."""
    result = AlertIngestResult()
    received: Counter[tuple[str, str]] = Counter()
    # Read before any transaction: what a concurrent delivery stores meanwhile is caught by the
    # events' unique dedup key (the batch is replayed), as it would be inside one.
    keys = [dedup_key(alert) for alert in alerts]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT dedup_key FROM {ClusterEvent._meta.db_table} WHERE dedup_key = ANY(%s)", [keys])  # noqa: S608
        seen = {row[0] for row in cursor.fetchall()}
    fresh: list[tuple[str, dict[str, Any], Cluster | None, tuple[str, str, str] | None, tuple[Any, ...]]] = []
    clusters: _Clusters | None = None
    for key, alert in zip(keys, alerts, strict=True):
        if key in seen:
            result.duplicates += 1
            received[(alert["status"], "duplicate")] += 1
            continue
        seen.add(key)
        clusters = clusters or _lookup_clusters(alerts)
        cluster = clusters.get(alert["labels"].get("cluster", ""))
        workload = alert_workload(alert["labels"])
        lookup = (cluster.pk if cluster else None, *(workload or ("", "", "")), "" if workload else alert["fingerprint"])
        fresh.append((key, alert, cluster, workload, lookup))
    if not fresh:
        _count_received(received)
        return result
    if all(alert["status"] == "firing" for _, alert, _, _, _ in fresh):
        _merge_firing(fresh, now, result, received)
    else:
        with transaction.atomic():
            _apply_in_order(fresh, now, result, received)
            # The opened ones are the announcing task's to report, once announced.
            announce_ingested(None, AlertIngestResult(resolved=result.resolved))
    _count_received(received)
    log.info("alert_batch_ingested", stored=result.stored, duplicates=result.duplicates, opened=len(result.opened),
             resolved=len(result.resolved))
    return result


_Fresh = list[tuple[str, dict[str, Any], "Cluster | None", "tuple[str, str, str] | None", tuple[Any, ...]]]
_SEVERITY_SQL = "CASE {} WHEN 'critical' THEN 2 WHEN 'info' THEN 0 ELSE 1 END"
_MERGE_SQL = (
    # Rows locked in id order (no crosswise deadlocks) and only now: the lock is held from here to
    # COMMIT. NO KEY UPDATE, the lock an UPDATE takes anyway, lets other writers' foreign keys to
    # these incidents (events, runs, outbox rows) through.
    f"WITH locked AS MATERIALIZED (SELECT id FROM {Incident._meta.db_table} "  # noqa: S608 (our table)
    "WHERE id = ANY(%s) AND state = 'open' ORDER BY id FOR NO KEY UPDATE) "
    f"UPDATE {Incident._meta.db_table} AS i SET alerts = i.alerts || v.alerts, evidence = i.evidence || v.evidence, "
    "alertname = CASE WHEN i.alertname = '' THEN v.alertname ELSE i.alertname END, "
    f"severity = CASE WHEN {_SEVERITY_SQL.format('v.severity')} > {_SEVERITY_SQL.format('i.severity')} "
    "THEN v.severity ELSE i.severity END, last_seen_at = v.last_seen_at, count = i.count + v.count "
    "FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, alerts jsonb, evidence jsonb, alertname text, severity text, "
    "last_seen_at timestamptz, count integer), locked WHERE i.id = v.id AND locked.id = v.id"
)


class _IncidentClosed(Exception):
    """An incident this batch read as open was resolved before the batch locked it."""


def _merge_firing(fresh: _Fresh, now: datetime, result: AlertIngestResult, received: Counter[tuple[str, str]]) -> None:
    """A batch of firing alerts: every change is a merge, so no row is locked while Python works.

    What applying the alerts one by one would do to an open incident (alerts and evidence merged
    with the later alert winning, alertname kept or set, worst severity, count + n, last_seen_at)
    is computed per incident first and applied by one UPDATE on the row's current values: a
    concurrent poll or batch that changed the row in between is merged with, not overwritten.
    """
    open_ids = _find_open_incidents(fresh)
    first_firing: dict[tuple[Any, ...], tuple[str, dict[str, Any], Cluster | None, tuple[str, str, str] | None]] = {}
    for key, alert, cluster, workload, lookup in fresh:
        if lookup not in open_ids:
            first_firing.setdefault(lookup, (key, alert, cluster, workload))
    created: dict[tuple[Any, ...], str] = {}
    if first_firing:
        # The missing incidents in a transaction of their own, committed at once: a concurrent
        # batch opening the same workload waits on the unique index for this INSERT and its
        # COMMIT, not for the rest of our batch. Each row holds its opening alert; the rest of the
        # batch is merged below. (A batch that fails after this is delivered again and merges its
        # opening alert too: counted twice, stored once.) Announced by a task once committed.
        with transaction.atomic():
            for lookup, incident, was_created in _open_missing(first_firing, now, lock=False):
                open_ids[lookup] = incident.pk
                if was_created:
                    created[lookup] = first_firing[lookup][0]
                    result.opened.append(incident.pk)
            announce_after_commit(result.opened)
    with transaction.atomic():
        _merge_into_open(fresh, open_ids, created, now, result, received)


def _merge_into_open(fresh: _Fresh, open_ids: dict[tuple[Any, ...], int], created: dict[tuple[Any, ...], str],
                     now: datetime, result: AlertIngestResult, received: Counter[tuple[str, str]]) -> None:
    """The batch's events and one merging UPDATE of the open incidents it names (one transaction)."""
    deltas: dict[int, dict[str, Any]] = {}
    events: list[ClusterEvent] = []
    for key, alert, cluster, workload, lookup in fresh:
        pk = open_ids[lookup]
        if created.get(lookup) != key:  # the opening alert is already in the new row
            delta = deltas.get(pk)
            if delta is None:
                delta = deltas[pk] = {"id": pk, "alerts": {}, "evidence": {}, "alertname": "", "severity": "",
                                      "last_seen_at": now, "count": 0}
            alertname = alert["labels"]["alertname"]
            severity = alert_severity(alert["labels"])
            delta["alerts"][alert["fingerprint"]] = alertname
            delta["evidence"][f"alert:{alertname}"] = _evidence_entry(alert)
            delta["alertname"] = delta["alertname"] or indexed_alertname(alert)
            delta["severity"] = worst_severity([delta["severity"] or severity, severity])
            delta["count"] += 1
        event = _alert_event(None, ClusterEvent.Kind.ALERT_FIRED, alert, key, cluster, workload)
        event.incident_id = pk
        events.append(event)
        result.stored += 1
    received[("firing", "stored")] += result.stored
    # Events first: their foreign keys take KEY SHARE locks, which no other writer's lock on these
    # rows excludes; the incidents' own lock comes last and is held for the UPDATE and COMMIT only.
    _insert_events(events)
    if deltas:
        with connection.cursor() as cursor:
            cursor.execute(_MERGE_SQL, [sorted(deltas), _json_rows(list(deltas.values()))])
            if cursor.rowcount != len(deltas):
                raise _IncidentClosed(f"{len(deltas) - cursor.rowcount} incidents closed while the batch was read")


def _find_open_incidents(fresh: _Fresh) -> dict[tuple[Any, ...], int]:
    """Ids of the open incidents the batch names, read without a lock (one query)."""
    names = {workload[2] for _, _, _, workload, _ in fresh if workload}
    fingerprints = {alert["fingerprint"] for _, alert, _, workload, _ in fresh if not workload}
    query = Q(fingerprint="", workload_name__in=names)
    if fingerprints:
        query |= Q(fingerprint__in=fingerprints)
    rows = Incident.objects.filter(query, state=Incident.State.OPEN).values_list(
        "pk", "cluster_id", "workload_kind", "namespace", "workload_name", "fingerprint")
    return {tuple(row[1:]): row[0] for row in rows}


def _apply_in_order(fresh: _Fresh, now: datetime, result: AlertIngestResult, received: Counter[tuple[str, str]]) -> None:
    """A batch with resolved alerts: lock the incidents, apply each alert in delivery order."""
    incidents = _lock_open_incidents([(key, alert, cluster) for key, alert, cluster, _, _ in fresh])

    # Phase 1: open what is missing.
    first_firing: dict[tuple[Any, ...], tuple[str, dict[str, Any], Cluster | None, tuple[str, str, str] | None]] = {}
    for key, alert, cluster, workload, lookup in fresh:
        if alert["status"] == "firing" and lookup not in incidents:
            first_firing.setdefault(lookup, (key, alert, cluster, workload))
    created: dict[tuple[Any, ...], str] = {}  # lookup -> the dedup key of the alert that opened it
    opened: list[Incident] = []
    for lookup, incident, was_created in _open_missing(first_firing, now, lock=True):
        incidents[lookup] = incident
        if was_created:
            created[lookup] = first_firing[lookup][0]
            opened.append(incident)

    # Phase 2: apply every alert in delivery order, in memory; then one UPDATE, one INSERT.
    touched: dict[int, Incident] = {}
    events: list[ClusterEvent] = []
    resolved: list[tuple[Incident, str]] = []
    for key, alert, cluster, workload, lookup in fresh:
        incident = incidents.get(lookup)
        if alert["status"] == "firing":
            if incident is None:
                # Resolved earlier in this batch and firing again: a new incident, as it would be
                # in the next batch. The closed row must be written first (one open per key).
                if touched:
                    _update_touched(list(touched.values()))
                    touched.clear()
                _insert_events(events)
                events = []
                incident, was_created = _open_for_alert(alert, cluster, workload, now)
                incidents[lookup] = incident
                if was_created:
                    created[lookup] = key
                    opened.append(incident)
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
                    # Closed as resolve_incident closes it; its event follows the alert's on the timeline.
                    reason = f"alert {alert['labels']['alertname']} resolved"
                    incident.state = Incident.State.RESOLVED
                    incident.resolved_at = now
                    events.append(build_event(incident, incident.cluster, ClusterEvent.Kind.RESOLVED,
                                              finding_type=incident.primary_type, alertname=incident.alertname,
                                              message=reason, severity=incident.severity))
                    resolved.append((incident, reason))
                    result.resolved.append(incident.pk)
                    incidents.pop(lookup)
        result.stored += 1
        received[(alert["status"], "stored")] += 1
    if touched:
        _update_touched(list(touched.values()))
    _insert_events(events)
    # Opened: announced by a task after commit. Resolved: announced here, in this transaction (an
    # incident opened and resolved before its announcement is announced first, then resolved).
    result.opened.extend(incident.pk for incident in opened)
    announce_after_commit(result.opened)
    for incident, reason in resolved:
        announce_resolved(incident, reason)


def _count_received(received: Counter[tuple[str, str]]) -> None:
    for (status, outcome), count in received.items():
        metrics.ALERTS_RECEIVED.labels(status, outcome).inc(count)


def _alert_event(incident: Incident | None, kind: str, alert: dict[str, Any], key: str, cluster: Cluster | None,
                 workload: tuple[str, str, str] | None) -> ClusterEvent:
    labels = alert["labels"]
    return build_event(
        incident, cluster, kind, alertname=indexed_alertname(alert), severity=alert_severity(labels), message=_summary(alert),
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
    found = Incident.objects.select_for_update(no_key=True).filter(query, state=Incident.State.OPEN).order_by("pk")
    return {(i.cluster_id, i.workload_kind, i.namespace, i.workload_name, i.fingerprint): i for i in found}


def _evidence_entry(alert: dict[str, Any]) -> dict[str, Any]:
    return {"labels": alert["labels"], "annotations": alert.get("annotations") or {},
            "startsAt": alert["startsAt"].isoformat(), "fingerprint": alert["fingerprint"]}


def _new_incident(alert: dict[str, Any], cluster: Cluster | None, workload: tuple[str, str, str] | None,
                  now: datetime) -> Incident:
    kind, namespace, name = workload or ("", "", "")
    return Incident(cluster=cluster, workload_kind=kind, namespace=namespace, workload_name=name,
                    fingerprint="" if workload else alert["fingerprint"], source=Incident.Source.ALERTMANAGER,
                    state=Incident.State.OPEN, opened_at=now, last_seen_at=now, **_opening_fields(alert))


def _opening_fields(alert: dict[str, Any]) -> dict[str, Any]:
    alertname = alert["labels"]["alertname"]
    return {"announce_pending": True, "alertname": indexed_alertname(alert), "alerts": {alert["fingerprint"]: alertname},
            "severity": alert_severity(alert["labels"]), "title": _summary(alert)[:500],
            "evidence": {f"alert:{alertname}": _evidence_entry(alert)}}


def _open_for_alert(alert: dict[str, Any], cluster: Cluster | None, workload: tuple[str, str, str] | None,
                    now: datetime) -> tuple[Incident, bool]:
    return open_incident(cluster, workload or ("", "", ""), now=now, source=Incident.Source.ALERTMANAGER,
                         fingerprint="" if workload else alert["fingerprint"], fields=_opening_fields(alert))


def _apply_firing(incident: Incident, alert: dict[str, Any], now: datetime) -> None:
    alertname = alert["labels"]["alertname"]
    incident.alerts = {**(incident.alerts or {}), alert["fingerprint"]: alertname}
    incident.alertname = incident.alertname or indexed_alertname(alert)
    incident.severity = worst_severity([incident.severity, alert_severity(alert["labels"])])
    incident.evidence = {**(incident.evidence or {}), f"alert:{alertname}": _evidence_entry(alert)}
    incident.last_seen_at = now
    incident.count += 1
