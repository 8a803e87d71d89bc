"""Each sandbox fault, polled through the real kubernetes client over TLS: one incident within
one poll, none more on repeats, resolved after clearing, a new one when it comes back."""

from __future__ import annotations

import pytest

from playbooks.models import Incident
from playbooks.tasks import poll_cluster

pytestmark = pytest.mark.django_db

DEMO_FAULTS = ("payments/ledger", "data/report-builder", "node-4")

# (fault[:mode], target, the incident's workload key, finding types of which it must carry one
# and of which its primary type is)
FAULTS = [
    ("crash_loop", "shop/cart", "Deployment/shop/cart", {"crash_loop"}),
    ("oom_killed", "shop/checkout", "Deployment/shop/checkout", {"oom_killed"}),
    ("image_pull_failure", "shop/frontend", "Deployment/shop/frontend", {"image_pull_failure"}),
    ("unschedulable", "payments/ledger", "Deployment/payments/ledger", {"unschedulable"}),
    ("not_ready_node", "node-2", "Node//node-2", {"not_ready_node"}),
    ("replication_failure", "payments/payments-api", "Deployment/payments/payments-api", {"crash_loop", "replication_failure"}),
    ("probe_failure", "shop/checkout", "Deployment/shop/checkout", {"probe_failure"}),  # readiness
    ("probe_failure:liveness", "shop/cart", "Deployment/shop/cart", {"probe_failure"}),  # killed and restarted
    ("hpa_maxed", "shop/cart", "Deployment/shop/cart", {"hpa_maxed"}),
    ("failed_job", "data/nightly-export", "Job/data/nightly-export", {"failed_job"}),
    ("evicted", "shop/frontend", "Deployment/shop/frontend", {"evicted"}),
]


@pytest.fixture
def quiet_sandbox(sandbox, sandbox_cluster, settings):  # type: ignore[no-untyped-def]
    """The demo without its three standing faults: a healthy cluster to break one thing in."""
    settings.AIOPS_RESOLVE_AFTER = 2
    for target in DEMO_FAULTS:
        sandbox.clear(target)
    sandbox.tick()
    assert poll_cluster(sandbox_cluster.pk) == "ok"
    assert list(Incident.objects.values_list("primary_type", "workload_name")) == []
    return sandbox, sandbox_cluster


@pytest.mark.parametrize(("fault", "target", "key", "types"), FAULTS, ids=[f[0] for f in FAULTS])
def test_each_fault_opens_one_incident_and_clearing_resolves_it(quiet_sandbox, signal_log, fault, target, key, types) -> None:  # type: ignore[no-untyped-def]
    sandbox, cluster = quiet_sandbox
    fault, _, probe = fault.partition(":")
    opts = {"probe": probe} if probe else {}
    sandbox.fault(fault, target, **opts)
    sandbox.tick()
    poll_cluster(cluster.pk)
    incident = Incident.objects.get(state="open")
    assert incident.workload_key == key
    assert types & set(incident.finding_types), incident.finding_types
    assert incident.primary_type in types, (incident.primary_type, incident.finding_types)
    assert signal_log.opened == [incident.pk]

    sandbox.tick()
    poll_cluster(cluster.pk)
    assert Incident.objects.count() == 1 and signal_log.opened == [incident.pk]

    sandbox.clear(target)
    sandbox.tick()
    poll_cluster(cluster.pk)
    poll_cluster(cluster.pk)
    incident.refresh_from_db()
    assert incident.state == "resolved", list(incident.events.values_list("kind", "message"))
    assert signal_log.resolved == [incident.pk]

    sandbox.fault(fault, target, **opts)
    sandbox.tick()
    poll_cluster(cluster.pk)
    again = Incident.objects.get(state="open")
    assert again.pk != incident.pk and again.workload_key == key
