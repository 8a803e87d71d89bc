"""Correlation's parts without the engine: the topology the watcher builds, and an Alertmanager
alert linked to the open incident that lists the pod it names (webhook -> real PostgreSQL)."""

from __future__ import annotations

import json

import pytest

from k8s.sandbox import faults, scenarios
from k8s.sandbox.simulation import Simulation
from k8s.topology import Topology
from k8s.watch_state import ClusterState
from playbooks.models import Incident
from playbooks.services.announce import announce_pending
from tests.playbooks.test_alertmanager import TOKEN, URL, alert, batch


def _crowded(workloads: int = 2) -> Simulation:
    sim = Simulation()
    scenarios.load(sim, "empty")
    scenarios.crowd_node(sim, workloads=workloads, replicas=2, node="node-x")
    faults.inject(sim, "not_ready_node", "node-x")
    sim.tick()
    return sim


def test_the_watchers_topology_names_the_not_ready_node_of_a_workloads_failing_pods() -> None:
    sim = _crowded()
    state = ClusterState()
    for kind, plural in (("pods", "pods"), ("nodes", "nodes"), ("deployments", "deployments"),
                         ("replicasets", "replicasets")):
        state.replace(kind, sim.store.all(plural))
    key = ("Deployment", "crowd-00", "app-0000")
    topology = state.topology_for({key})
    assert topology.not_ready_nodes == {"node-x"}
    assert topology.cause_node(key) == "node-x" and topology.pods_on(key, "node-x") == 2
    assert topology.cause_node(("Deployment", "crowd-01", "app-0001")) is None  # not asked about: not counted


def test_a_workload_failing_on_a_healthy_node_too_has_no_cause_node() -> None:
    topology = Topology()
    topology.add_nodes([
        {"metadata": {"name": "bad"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}},
        {"metadata": {"name": "good"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
    ])

    def pod(node: str, ready: str) -> dict:
        return {"metadata": {"name": f"p-{node}", "namespace": "ns"}, "spec": {"nodeName": node},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": ready}]}}

    topology.add_pods([pod("bad", "False"), pod("good", "False")], lambda p: ("Deployment", "web"))
    assert topology.cause_node(("Deployment", "ns", "web")) is None
    only_bad = Topology()
    only_bad.add_nodes([{"metadata": {"name": "bad"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}])
    only_bad.add_pods([pod("bad", "False"), pod("good", "True")], lambda p: ("Deployment", "web"))
    assert only_bad.cause_node(("Deployment", "ns", "web")) == "bad"


@pytest.mark.django_db
def test_an_alert_naming_a_pod_of_an_open_incident_becomes_its_child(client, settings, make_incident,  # type: ignore[no-untyped-def]
                                                                     no_playbooks) -> None:
    settings.AIOPS_ALERTMANAGER_TOKEN = TOKEN
    rollout = make_incident(workload_kind="StatefulSet", namespace="shop", workload_name="db", primary_type="crash_loop",
                            affected_pods=["db-0", "db-1"])
    body = batch(alert("KubePodNotReady", fingerprint="0f0e0d0c0b0a0908", namespace="shop", pod="db-1",
                       severity="warning"))
    response = client.post(URL, data=json.dumps(body), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    child = Incident.objects.exclude(pk=rollout.pk).get()
    assert child.parent_id is None  # linked when announced, by the task the batch's commit sends
    assert announce_pending(response.json()["opened"]) == [child.pk]
    child.refresh_from_db()
    assert child.workload_key == "Pod/shop/db-1"
    assert child.parent_id == rollout.pk
    assert child.correlation["cause"] == "alert" and "db-1" in child.correlation["text"]
    assert child.events.filter(kind="correlated").exists()
    assert list(rollout.children.values_list("pk", flat=True)) == [child.pk]
