"""Incident lifecycle: turn one poll's findings into opened, refreshed and resolved incidents.

`ingest_findings(cluster, findings)` is a diff between what the detectors see now and the open
incidents of that cluster, done in one transaction with the cluster row locked
(`SELECT ... FOR NO KEY UPDATE`): two workers ingesting the same cluster at once run one after
the other, and the unique partial index on open incidents catches anything that slips past
(an Alertmanager delivery opening the same workload's incident at the same moment).

Row locks are FOR NO KEY UPDATE (what an UPDATE of non-key columns takes anyway): they exclude
each other but not the KEY SHARE locks that inserting rows with foreign keys to a cluster or an
incident takes (events, alert batches, playbook runs), so a poll and an Alertmanager batch that
inserted events for the same cluster cannot deadlock on it.

Signals (`incident_opened`, `incident_resolved`) are sent inside the transaction so that their
receivers' writes (outbox rows, playbook runs) commit or roll back with the incident.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from k8s.detectors import Finding, primary_type
from k8s.models import Cluster
from k8s.topology import Topology
from playbooks import metrics
from playbooks.models import ClusterEvent, Incident
from playbooks.services.correlation import Correlator
from playbooks.signals import incident_opened, incident_resolved, incidents_ingested

log = structlog.get_logger(__name__)

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
CLUSTER_KIND = "Cluster"  # workload_kind of a cluster_unreachable incident


def worst_severity(values: Iterable[str]) -> str:
    return max(values, key=lambda value: SEVERITY_RANK.get(value, 1), default="warning")


@dataclass
class IngestResult:
    opened: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    unchanged: int = 0


@dataclass
class _Group:
    kind: str
    namespace: str
    name: str
    findings: list[Finding]

    @property
    def types(self) -> list[str]:
        return sorted({f.type for f in self.findings})

    @property
    def pods(self) -> list[str]:
        return sorted({f.pod for f in self.findings if f.pod})

    @property
    def primary(self) -> str:
        return primary_type(self.types)

    def evidence(self) -> dict[str, Any]:
        # One entry per finding type: the first finding's evidence plus where it was seen, so a
        # rule can ask for `replication_failure.bad_rollout` and a person sees every pod.
        by_type: dict[str, dict[str, Any]] = {}
        for finding in self.findings:
            entry = by_type.get(finding.type)
            if entry is None:
                entry = by_type[finding.type] = {**finding.evidence, "message": finding.message, "seen_on": []}
            entry["seen_on"].append(f"{finding.kind}/{finding.namespace}/{finding.name}" if finding.namespace else f"{finding.kind}/{finding.name}")
        for entry in by_type.values():
            entry["seen_on"] = sorted(set(entry["seen_on"]))[:50]
        return by_type

    def title(self) -> str:
        lead = next(f for f in self.findings if f.type == self.primary)
        others = len(self.pods) - 1
        return lead.message + (f" (and {others} more pods)" if others > 0 else "")


def group_findings(findings: Iterable[Finding], ignored_namespaces: Iterable[str] = ()) -> dict[tuple[str, str, str], _Group]:
    ignored = set(ignored_namespaces)
    groups: dict[tuple[str, str, str], _Group] = {}
    for finding in findings:
        if finding.namespace and finding.namespace in ignored:
            continue
        key = (finding.owner_kind, finding.namespace, finding.owner_name)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(*key, findings=[])
        group.findings.append(finding)
    return groups


def build_event(incident: Incident | None, cluster: Cluster | None, kind: str, *, finding_type: str = "", message: str = "",
           severity: str = "", data: dict[str, Any] | None = None, workload: tuple[str, str, str] | None = None,
           alertname: str = "", dedup_key: str | None = None) -> ClusterEvent:
    if workload is None and incident is not None:
        workload = (incident.workload_kind, incident.namespace, incident.workload_name)
    wk, ns, name = workload or ("", "", "")
    return ClusterEvent(
        cluster=cluster, incident=incident, kind=kind, finding_type=finding_type, alertname=alertname,
        workload_kind=wk, namespace=ns, workload_name=name, severity=severity, message=message[:4000],
        data=data or {}, dedup_key=dedup_key,
    )


def open_incident(cluster: Cluster | None, workload: tuple[str, str, str], *, now: datetime, source: str,
                  fields: dict[str, Any], fingerprint: str = "") -> tuple[Incident, bool]:
    """Create the open incident for this key, or return the one another worker just opened.

    The savepoint makes the unique index's refusal recoverable inside our transaction.
    """
    kind, namespace, name = workload
    try:
        with transaction.atomic():
            incident = Incident.objects.create(
                cluster=cluster, workload_kind=kind, namespace=namespace, workload_name=name, fingerprint=fingerprint,
                source=source, state=Incident.State.OPEN, opened_at=now, last_seen_at=now, **fields,
            )
        return incident, True
    except IntegrityError:
        lookup: dict[str, Any] = {"state": Incident.State.OPEN}
        if fingerprint:
            lookup["fingerprint"] = fingerprint
        else:
            lookup.update(cluster=cluster, workload_kind=kind, namespace=namespace, workload_name=name, fingerprint="")
        return Incident.objects.select_for_update(no_key=True).get(**lookup), False


def announce_opened(incident: Incident, *, again: str = "", note: str = "") -> None:
    """Tell the receivers (notifications, the engine) -- unless a silence holds it. `again` names
    why an open incident is announced a second time (its silence ended), `note` says so to people."""
    from playbooks.services.silences import hold_if_silenced

    if not again:
        metrics.INCIDENTS_OPENED.labels(incident.source, incident.primary_type or incident.alertname or "alert").inc()
    log.info("incident_opened", incident=incident.pk, workload=incident.workload_key, type=incident.primary_type,
             alertname=incident.alertname, severity=incident.severity, source=incident.source, again=again or None)
    if not again and hold_if_silenced(incident):
        return
    incident_opened.send(sender=Incident, incident=incident, again=again, note=note)


def resolve_incident(incident: Incident, *, now: datetime, reason: str) -> None:
    """Close an open incident (caller holds its row lock) and tell the receivers."""
    incident.state = Incident.State.RESOLVED
    incident.resolved_at = now
    incident.save(update_fields=["state", "resolved_at", "finding_types", "alerts", "absent_polls", "last_seen_at"])
    build_event(incident, incident.cluster, ClusterEvent.Kind.RESOLVED, finding_type=incident.primary_type,
           alertname=incident.alertname, message=reason, severity=incident.severity).save()
    announce_resolved(incident, reason)


def announce_ingested(cluster_id: int | None, result: Any, linked: list[Incident] | None = None) -> None:
    """Once per ingest, inside its transaction: what it opened, resolved (ids in `result`) and linked."""
    if not (result.opened or result.resolved or linked):
        return
    incidents_ingested.send(sender=Incident, cluster_id=cluster_id, opened=list(result.opened),
                            resolved=list(result.resolved), linked=[i.pk for i in linked or []])


def announce_resolved(incident: Incident, reason: str) -> None:
    """Metric, log and `incident_resolved` for an incident the caller has just closed and saved
    (an alert's incident not announced yet is announced first: opened comes before resolved)."""
    from playbooks.services.announce import announce_before_resolving

    announce_before_resolving(incident)
    metrics.INCIDENTS_RESOLVED.labels(incident.source, incident.primary_type or incident.alertname or "alert").inc()
    log.info("incident_resolved", incident=incident.pk, workload=incident.workload_key, type=incident.primary_type,
             reason=reason)
    incident_resolved.send(sender=Incident, incident=incident, reason=reason)


def ingest_findings(cluster: Cluster, findings: Iterable[Finding], *, now: datetime | None = None,
                    topology: Topology | None = None) -> IngestResult:
    """Diff one poll's findings with the cluster's open incidents; safe with any number of workers.

    `topology` (where failing pods run) lets correlation link workloads to a NotReady node's incident."""
    now = now or timezone.now()
    findings = list(findings)
    for finding in findings:
        metrics.FINDINGS.labels(finding.type).inc()
    result = IngestResult()
    with transaction.atomic():
        # Serialises ingests of one cluster (a poll and a redelivered poll, or two workers).
        locked = Cluster.objects.select_for_update(no_key=True).get(pk=cluster.pk)
        groups = group_findings(findings, locked.ignored_namespaces or [])
        open_by_key = {
            (i.workload_kind, i.namespace, i.workload_name): i
            # Locked in id order, as the alert ingest does: two writers never wait on each other crosswise.
            for i in Incident.objects.select_for_update(no_key=True)
            .filter(cluster=locked, state=Incident.State.OPEN, fingerprint="")
            .order_by("pk")
        }
        events: list[ClusterEvent] = []
        links = Correlator(locked, topology, now)
        for key, group in _causes_first(groups):
            _open_or_refresh(locked, key, group, open_by_key.pop(key, None), now, Incident.Source.POLL, result, events, links)
        # What the detectors no longer see. A cluster_unreachable incident is not a finding of
        # the detectors: it closes when the cluster answers (`record_poll_success`).
        for incident in open_by_key.values():
            if incident.workload_kind == CLUSTER_KIND or not incident.finding_types:
                continue
            incident.absent_polls += 1
            if incident.absent_polls < settings.AIOPS_RESOLVE_AFTER:
                incident.save(update_fields=["absent_polls"])
                continue
            cleared = list(incident.finding_types)
            incident.finding_types = []
            if incident.alerts:
                # An alert still fires for this workload: the incident stays open on its account.
                incident.absent_polls = 0
                incident.save(update_fields=["finding_types", "absent_polls"])
                events.append(build_event(incident, locked, ClusterEvent.Kind.CHANGED, message=f"findings gone: {', '.join(cleared)}",
                                     data={"removed_types": cleared}))
                continue
            ClusterEvent.objects.bulk_create(events)
            events = []
            resolve_incident(incident, now=now, reason=f"not seen for {incident.absent_polls} polls: {', '.join(cleared)}")
            result.resolved.append(incident.pk)
        ClusterEvent.objects.bulk_create(events)
        announce_ingested(locked.pk, result, linked=links.linked)
    return result


def ingest_workload_findings(cluster: Cluster, workloads: Iterable[tuple[str, str, str]], findings: Iterable[Finding], *,
                             now: datetime | None = None, topology: Topology | None = None) -> IngestResult:
    """What the watcher saw on the workloads an event touched: open or refresh their incidents.

    The same open/refresh path as the poll's ingest, under the same cluster row lock and unique
    index, so whichever path sees a fault first opens its incident and the other refreshes it.
    Nothing is resolved here: a workload that looks healthy now is left to the poll, which
    resolves after AIOPS_RESOLVE_AFTER clean polls (a stream cannot tell "fixed" from "flapping").
    """
    now = now or timezone.now()
    findings = list(findings)
    for finding in findings:
        metrics.FINDINGS.labels(finding.type).inc()
    scope = set(workloads)
    result = IngestResult()
    with transaction.atomic():
        locked = Cluster.objects.select_for_update(no_key=True).get(pk=cluster.pk)
        groups = {key: group for key, group in group_findings(findings, locked.ignored_namespaces or []).items()
                  if key in scope}
        if not groups:
            return result
        open_by_key = {
            (i.workload_kind, i.namespace, i.workload_name): i
            for i in Incident.objects.select_for_update(no_key=True)
            .filter(cluster=locked, state=Incident.State.OPEN, fingerprint="",
                    workload_name__in={name for _, _, name in groups})
            .order_by("pk")
        }
        events: list[ClusterEvent] = []
        links = Correlator(locked, topology, now)
        for key, group in _causes_first(groups):
            _open_or_refresh(locked, key, group, open_by_key.get(key), now, Incident.Source.WATCH, result, events, links)
        ClusterEvent.objects.bulk_create(events)
        announce_ingested(locked.pk, result, linked=links.linked)
    return result


def _causes_first(groups: dict[tuple[str, str, str], _Group]) -> list[tuple[tuple[str, str, str], _Group]]:
    # Nodes open before the workloads on them, so a workload's incident opens as the node's child.
    return sorted(groups.items(), key=lambda item: item[0][0] != "Node")


def _open_or_refresh(locked: Cluster, key: tuple[str, str, str], group: _Group, incident: Incident | None, now: datetime,
                     source: str, result: IngestResult, events: list[ClusterEvent], links: Correlator | None = None) -> None:
    if incident is None:
        fields = {"primary_type": group.primary, "finding_types": group.types,
                  "severity": worst_severity(f.severity for f in group.findings), "title": group.title()[:500],
                  "affected_pods": group.pods, "evidence": group.evidence()}
        cause = links.parent_for(key, group.types, fields["evidence"]) if links else None
        if cause is not None:
            fields.update(parent=cause[0], correlation=cause[1])
        incident, created = open_incident(locked, key, now=now, source=source, fields=fields)
        if created:
            result.opened.append(incident.pk)
            ClusterEvent.objects.bulk_create(events)
            events.clear()
            ClusterEvent.objects.bulk_create(
                build_event(incident, locked, ClusterEvent.Kind.DETECTED, finding_type=t,
                            message=group.evidence()[t]["message"], severity=incident.severity)
                for t in group.types
            )
            announce_opened(incident)
            if links is not None:
                links.opened(incident)
            return
    if _refresh(incident, group, now, events):
        result.updated.append(incident.pk)
    else:
        result.unchanged += 1
    if links is not None:
        links.refreshed(incident, group.types, incident.evidence)


def _refresh(incident: Incident, group: _Group, now: datetime, events: list[ClusterEvent]) -> bool:
    """Touch an open incident seen again; record what changed. True when something did."""
    types, pods = group.types, group.pods
    added = sorted(set(types) - set(incident.finding_types or []))
    removed = sorted(set(incident.finding_types or []) - set(types))
    pods_added = sorted(set(pods) - set(incident.affected_pods or []))
    pods_removed = sorted(set(incident.affected_pods or []) - set(pods))
    evidence = group.evidence()
    if incident.absent_polls:
        events.append(build_event(incident, incident.cluster, ClusterEvent.Kind.RECURRED, finding_type=group.primary,
                             message=f"seen again after {incident.absent_polls} polls without it", severity=incident.severity))
    for finding_type in added:
        events.append(build_event(incident, incident.cluster, ClusterEvent.Kind.DETECTED, finding_type=finding_type,
                             message=evidence[finding_type]["message"], severity=incident.severity))
    if removed or pods_added or pods_removed:
        events.append(build_event(incident, incident.cluster, ClusterEvent.Kind.CHANGED, finding_type=group.primary,
                             message="findings or affected pods changed",
                             data={"added_types": added, "removed_types": removed,
                                   "pods_added": pods_added[:50], "pods_removed": pods_removed[:50]}))
    changed = bool(added or removed or pods_added or pods_removed or incident.absent_polls)
    # Alert evidence (keys "alert:<name>") outlives a poll; finding evidence is replaced.
    kept = {k: v for k, v in (incident.evidence or {}).items() if k.startswith("alert:")}
    incident.finding_types = types
    incident.primary_type = group.primary if types else incident.primary_type
    incident.affected_pods = pods
    incident.evidence = {**kept, **evidence}
    incident.severity = worst_severity([*(f.severity for f in group.findings),
                                        *([incident.severity] if incident.alerts else [])])
    incident.title = group.title()[:500]
    incident.last_seen_at = now
    incident.count += 1
    incident.absent_polls = 0
    incident.save(update_fields=["finding_types", "primary_type", "affected_pods", "evidence", "severity", "title",
                                 "last_seen_at", "count", "absent_polls"])
    return changed


# --- cluster reachability --------------------------------------------------------------------


def record_poll_failure(cluster: Cluster, error: str, *, now: datetime | None = None) -> Incident | None:
    """Count a failed poll; the AIOPS_UNREACHABLE_AFTER-th in a row opens `cluster_unreachable`."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = Cluster.objects.select_for_update(no_key=True).get(pk=cluster.pk)
        locked.consecutive_failures += 1
        locked.last_poll_at = now
        locked.last_error = error[:2000]
        locked.save(update_fields=["consecutive_failures", "last_poll_at", "last_error"])
        log.warning("cluster_unreachable", cluster=locked.name, failures=locked.consecutive_failures, error=error[:500])
        if locked.consecutive_failures < settings.AIOPS_UNREACHABLE_AFTER:
            return None
        workload = (CLUSTER_KIND, "", locked.name)
        existing = Incident.objects.select_for_update(no_key=True).filter(
            cluster=locked, workload_kind=CLUSTER_KIND, namespace="", workload_name=locked.name,
            fingerprint="", state=Incident.State.OPEN).first()
        message = f"Cluster {locked.name} failed {locked.consecutive_failures} polls in a row: {error[:300]}"
        evidence = {"cluster_unreachable": {"consecutive_failures": locked.consecutive_failures, "error": error[:1000],
                                            "last_success_at": locked.last_success_at.isoformat() if locked.last_success_at else None}}
        if existing is not None:
            existing.count += 1
            existing.last_seen_at = now
            existing.evidence = evidence
            existing.save(update_fields=["count", "last_seen_at", "evidence"])
            return existing
        incident, created = open_incident(
            locked, workload, now=now, source=Incident.Source.POLL,
            fields={"primary_type": "cluster_unreachable", "finding_types": ["cluster_unreachable"], "severity": "critical",
                    "title": message[:500], "evidence": evidence},
        )
        if created:
            build_event(incident, locked, ClusterEvent.Kind.UNREACHABLE, finding_type="cluster_unreachable", message=message,
                   severity="critical").save()
            announce_opened(incident)
        return incident


def record_poll_success(cluster: Cluster, *, now: datetime | None = None) -> None:
    """The cluster answered: reset its failure count and resolve its cluster_unreachable incident."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = Cluster.objects.select_for_update(no_key=True).get(pk=cluster.pk)
        was_failing = locked.consecutive_failures
        locked.consecutive_failures = 0
        locked.last_poll_at = locked.last_success_at = now
        locked.last_error = ""
        locked.save(update_fields=["consecutive_failures", "last_poll_at", "last_success_at", "last_error"])
        if not was_failing:
            return
        incident = Incident.objects.select_for_update(no_key=True).filter(
            cluster=locked, workload_kind=CLUSTER_KIND, workload_name=locked.name, fingerprint="",
            state=Incident.State.OPEN).first()
        if incident is not None:
            build_event(incident, locked, ClusterEvent.Kind.REACHABLE, finding_type="cluster_unreachable",
                   message=f"answered again after {was_failing} failed polls").save()
            incident.finding_types = []
            resolve_incident(incident, now=now, reason=f"cluster answered again after {was_failing} failed polls")
