"""Correlation: an incident whose cause is another open incident becomes that incident's child.

- **A node that is not ready.** The poll (and the watcher) know where each workload's failing pods
  run (`k8s.topology`). A workload whose findings are only symptoms of lost pods (no available
  replicas, failing readiness) and whose failing pods are all on a NotReady node is a child of the
  node's incident. Crash loops, OOM kills and image pulls are a container's own story and stay
  incidents of their own; so does a bad rollout (a rollback is its fix, not the node's drain).
- **An Alertmanager alert** that opens an incident of its own but names a pod that an open
  incident lists among its affected pods (a bad rollout's pods, a StatefulSet's), or a node with
  an open incident, is a child of that incident.

A child is linked both ways (`Incident.parent` / `children`), gets a `correlated` event on its
timeline, and `incident_correlated` is sent so the channels fold its notification into the
parent's message. Its remediation waits while the parent has an active run (the node's drain
usually fixes it): `waits_for_parent` is asked by the engine before it starts a run, and a child
that is still failing once the parent's run is over starts its rule at the next poll that sees
it, as if it had just opened (`resume_if_parent_done`). Children resolve on their own as usual.

Everything here runs inside the ingest's transaction, under its cluster row lock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from django.db import transaction

from k8s.topology import Key, Topology
from playbooks import metrics
from playbooks.models import ClusterEvent, Incident, PlaybookRun
from playbooks.signals import incident_correlated

log = structlog.get_logger(__name__)

# Finding types that a NotReady node explains: the workload lost its pods' readiness.
NODE_SYMPTOMS = frozenset({"replication_failure", "probe_failure"})
NODE_KIND = "Node"


def _is_bad_rollout(evidence: dict[str, Any] | None) -> bool:
    return bool(((evidence or {}).get("replication_failure") or {}).get("bad_rollout"))


class Correlator:
    """One ingest's correlation of the workloads it opens or refreshes with open node incidents."""

    def __init__(self, cluster: Any, topology: Topology | None, now: datetime) -> None:
        self.cluster = cluster
        self.topology = topology
        self.now = now
        self._parents: dict[str, Incident] = {}
        self._parent_busy: dict[int, bool] = {}  # parent id -> has an active run (asked once per ingest)
        self.linked: list[Incident] = []

    def parent_for(self, key: Key, types: list[str], evidence: dict[str, Any]) -> tuple[Incident, dict[str, Any]] | None:
        """The open incident whose cause explains this workload's findings, and why (as data)."""
        if self.topology is None or key[0] == NODE_KIND or not types or not set(types) <= NODE_SYMPTOMS:
            return None
        if _is_bad_rollout(evidence):
            return None
        node = self.topology.cause_node(key)
        if node is None:
            return None
        parent = self._parents.get(node)
        if parent is None:
            parent = (Incident.objects.filter(cluster=self.cluster, workload_kind=NODE_KIND, namespace="",
                                              workload_name=node, fingerprint="", state=Incident.State.OPEN)
                      .only("pk", "workload_kind", "namespace", "workload_name", "cluster_id", "severity",
                            "primary_type", "title").first())
            if parent is None:
                return None
            self._parents[node] = parent
        pods = self.topology.pods_on(key, node)
        return parent, {"cause": "not_ready_node", "node": node, "pods": pods,
                        "text": f"{pods} of its failing pods run on node {node}, which is not ready"}

    def opened(self, incident: Incident) -> None:
        """A child opened with its parent set (before `announce_opened`): record and tell."""
        if incident.parent_id is not None:
            _announce_link(incident, incident.parent, incident.correlation or {})
            self.linked.append(incident)

    def refreshed(self, incident: Incident, types: list[str], evidence: dict[str, Any]) -> None:
        """An open incident seen again: link it when its cause appeared since, and start its
        deferred run once its parent's run is over."""
        if incident.parent_id is None:
            found = self.parent_for((incident.workload_kind, incident.namespace, incident.workload_name), types, evidence)
            if found is not None:
                parent, why = found
                link(incident, parent, why)
                self.linked.append(incident)
                return
        why = incident.no_run_reason or {}
        if incident.parent_id and why.get("code") == "correlated":
            busy = self._parent_busy.get(incident.parent_id)
            if busy is None:
                busy = self._parent_busy[incident.parent_id] = active_run(incident.parent_id) is not None
            if not busy:
                resume_if_parent_done(incident)


def link(child: Incident, parent: Incident, why: dict[str, Any]) -> None:
    """Make an open incident a child of another (caller holds the child's row lock)."""
    if child.pk == parent.pk or child.parent_id == parent.pk:
        return
    root = parent.parent if parent.parent_id else parent  # one level: a child's child is its parent's
    child.parent = root
    child.correlation = why
    type(child).objects.filter(pk=child.pk).update(parent=root, correlation=why)
    _announce_link(child, root, why)


def _announce_link(child: Incident, parent: Incident, why: dict[str, Any]) -> None:
    ClusterEvent.objects.create(
        cluster_id=child.cluster_id, incident=child, kind=ClusterEvent.Kind.CORRELATED,
        finding_type=child.primary_type, alertname=child.alertname, workload_kind=child.workload_kind,
        namespace=child.namespace, workload_name=child.workload_name, severity=child.severity,
        message=f"child of incident #{parent.pk} ({parent.workload_kind} {parent.workload_name}): {why.get('text', '')}"[:4000],
        data={"parent": parent.pk, **why},
    )
    metrics.INCIDENTS_CORRELATED.labels(str(why.get("cause") or "other")).inc()
    log.info("incident_correlated", incident=child.pk, parent=parent.pk, cause=why.get("cause"),
             workload=child.workload_key, parent_workload=parent.workload_key)
    incident_correlated.send(sender=Incident, parent=parent, child=child, reason=why)


def active_run(incident_id: int) -> PlaybookRun | None:
    return (PlaybookRun.objects.filter(incident_id=incident_id).exclude(state=PlaybookRun.State.FINISHED)
            .order_by("-pk").first())


def waits_for_parent(incident: Any) -> dict[str, Any] | None:
    """Why this incident's run must wait (its parent's run is active), as a no-run reason; else None."""
    if not getattr(incident, "parent_id", None):
        return None
    run = active_run(incident.parent_id)
    if run is None:
        return None
    parent = incident.parent
    what = f"{parent.workload_kind} {parent.workload_name}" if parent.workload_name else f"#{parent.pk}"
    metrics.RUNS_DEFERRED.inc()
    log.info("playbook_deferred_to_parent", incident=incident.pk, parent=parent.pk, parent_run=run.pk)
    return {"code": "correlated", "parent": parent.pk, "run": run.pk,
            "text": f"it waits for run #{run.pk} ({run.playbook_name}) of incident #{parent.pk} ({what}), "
                    f"its likely cause; it starts if it still fails once that run is over"}


def resume_if_parent_done(incident: Incident) -> None:
    """A child still failing after its parent's run ended: its rule runs as if it had just opened."""
    why = incident.no_run_reason or {}
    if not incident.parent_id or why.get("code") != "correlated":
        return
    if active_run(incident.parent_id) is not None or active_run(incident.pk) is not None:
        return
    from playbooks.engine import start_run_for_incident

    log.info("playbook_resumed_after_parent", incident=incident.pk, parent=incident.parent_id)
    try:
        with transaction.atomic():
            start_run_for_incident(incident)
    except Exception:  # noqa: BLE001 - logged with its traceback; the ingest carries on
        log.exception("playbook_start_failed", incident=incident.pk)


# --- Alertmanager ------------------------------------------------------------------------------


def _alert_labels(incident: Incident) -> dict[str, str]:
    labels: dict[str, str] = {}
    for key, entry in (incident.evidence or {}).items():
        if key.startswith("alert:") and isinstance(entry, dict):
            labels.update({k: str(v) for k, v in (entry.get("labels") or {}).items()})
    return labels


def link_alert_incident(incident: Incident) -> None:
    """An incident an alert just opened: a child of the open incident that lists the pod it
    names, or of the open incident of the node it names (before `announce_opened`)."""
    labels = _alert_labels(incident)
    open_here = Incident.objects.filter(cluster_id=incident.cluster_id, state=Incident.State.OPEN).exclude(pk=incident.pk)
    pod, namespace, node = labels.get("pod", ""), labels.get("namespace", ""), labels.get("node", "")
    parent, why = None, {}
    # An alert keyed by a workload is that workload's incident already (a Deployment's pod names it);
    # only one keyed by a bare pod or by its fingerprint may belong to another incident's pods.
    if pod and namespace and incident.workload_kind in ("", "Pod"):
        parent = open_here.filter(namespace=namespace, affected_pods__contains=[pod]).order_by("pk").first()
        if parent is not None:
            cause = "bad_rollout" if _is_bad_rollout(parent.evidence) else "alert"
            why = {"cause": cause, "pod": pod,
                   "text": f"the alert names pod {namespace}/{pod} of {parent.workload_kind} {parent.namespace}/{parent.workload_name}"}
    if parent is None and node and incident.workload_kind != NODE_KIND:
        parent = open_here.filter(workload_kind=NODE_KIND, workload_name=node, fingerprint="").first()
        if parent is not None:
            why = {"cause": "not_ready_node", "node": node, "text": f"the alert names node {node}, which has an open incident"}
    if parent is not None:
        link(incident, parent, why)
