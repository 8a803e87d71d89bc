"""The watch loop end to end in one process: the real kubernetes client polls a fake API server
(real wire format, real pagination), the detectors run, incidents open, refresh and resolve."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from k8s.models import Cluster
from playbooks.models import ClusterEvent, Incident
from playbooks.tasks import _redis, poll_cluster, poll_lock_key, watch_clusters
from tests.k8s.test_detectors import crashing, deployment, node, pod, replicaset

pytestmark = pytest.mark.django_db


def crashing_web(count: int = 3, last_reason: str = "Error") -> list[dict[str, Any]]:
    return [pod(f"web-7d9f8b6c5d-{suffix}", container=crashing(last_reason=last_reason))
            for suffix in ("bcdfg", "hjklm", "npqrs", "tvwxz")[:count]]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_one_fault_opens_one_incident_however_many_replicas_fail(fake_cluster_api, fake_cluster, signal_log) -> None:  # type: ignore[no-untyped-def]
    fake_cluster_api.set(pods=crashing_web(3), nodes=[node()], deployments=[deployment(available=0)], replicasets=[replicaset()])
    findings_before = metric("aiops_watch_findings_total", type="crash_loop")
    timed_before = metric("aiops_watch_poll_duration_seconds_count", cluster=fake_cluster.name)
    assert poll_cluster(fake_cluster.pk) == "ok"
    assert metric("aiops_watch_findings_total", type="crash_loop") == findings_before + 3  # one per crashing pod
    assert metric("aiops_watch_poll_duration_seconds_count", cluster=fake_cluster.name) == timed_before + 1

    incident = Incident.objects.get()
    assert incident.workload_key == "Deployment/shop/web"
    assert incident.state == "open" and incident.source == "poll"
    assert incident.finding_types == ["crash_loop", "replication_failure"]
    assert incident.primary_type == "crash_loop"
    assert incident.severity == "critical"
    assert incident.affected_pods == ["web-7d9f8b6c5d-bcdfg", "web-7d9f8b6c5d-hjklm", "web-7d9f8b6c5d-npqrs"]
    assert incident.evidence["replication_failure"]["desired_replicas"] == 3
    assert sorted(incident.events.values_list("kind", "finding_type")) == [
        ("detected", "crash_loop"), ("detected", "replication_failure")]
    assert signal_log.opened == [incident.pk]
    fake_cluster.refresh_from_db()
    assert fake_cluster.last_success_at is not None and fake_cluster.consecutive_failures == 0


def test_repeated_polls_touch_the_incident_without_a_new_one_or_a_new_signal(fake_cluster_api, fake_cluster, signal_log) -> None:  # type: ignore[no-untyped-def]
    fake_cluster_api.set(pods=crashing_web(2), replicasets=[replicaset()])
    for _ in range(3):
        poll_cluster(fake_cluster.pk)
    incident = Incident.objects.get()
    assert incident.count == 3
    assert len(signal_log.opened) == 1
    assert incident.events.count() == 1

    # A third replica starts failing: same incident, the change is on its timeline.
    fake_cluster_api.set(pods=crashing_web(3))
    poll_cluster(fake_cluster.pk)
    incident.refresh_from_db()
    assert len(incident.affected_pods) == 3 and Incident.objects.count() == 1
    change = incident.events.get(kind="changed")
    assert change.data["pods_added"] == ["web-7d9f8b6c5d-npqrs"]


def test_an_oom_joining_the_crash_loop_becomes_the_primary_type(fake_cluster_api, fake_cluster) -> None:  # type: ignore[no-untyped-def]
    fake_cluster_api.set(pods=crashing_web(1), replicasets=[replicaset()])
    poll_cluster(fake_cluster.pk)
    fake_cluster_api.set(pods=[*crashing_web(1), pod("web-7d9f8b6c5d-zzzzz", container=crashing(last_reason="OOMKilled", exit_code=137))])
    poll_cluster(fake_cluster.pk)
    incident = Incident.objects.get()
    assert incident.primary_type == "oom_killed"
    assert incident.finding_types == ["crash_loop", "oom_killed"]


def test_clearing_resolves_after_the_configured_absent_polls_and_a_recrash_opens_a_new_one(  # type: ignore[no-untyped-def]
    fake_cluster_api, fake_cluster, signal_log, settings
) -> None:
    settings.AIOPS_RESOLVE_AFTER = 2
    fake_cluster_api.set(pods=crashing_web(2), replicasets=[replicaset()])
    poll_cluster(fake_cluster.pk)
    first = Incident.objects.get()

    fake_cluster_api.set(pods=[pod()])  # healthy again
    poll_cluster(fake_cluster.pk)
    first.refresh_from_db()
    assert first.state == "open" and first.absent_polls == 1 and signal_log.resolved == []

    poll_cluster(fake_cluster.pk)
    first.refresh_from_db()
    assert first.state == "resolved" and first.resolved_at is not None
    assert signal_log.resolved == [first.pk]
    assert first.events.filter(kind="resolved").count() == 1

    fake_cluster_api.set(pods=crashing_web(1))
    poll_cluster(fake_cluster.pk)
    second = Incident.objects.get(state="open")
    assert second.pk != first.pk and signal_log.opened == [first.pk, second.pk]


def test_a_pod_flapping_between_crash_and_running_keeps_one_incident(fake_cluster_api, fake_cluster, signal_log) -> None:  # type: ignore[no-untyped-def]
    for crashing_now in (True, False, True, False, True):
        fake_cluster_api.set(pods=crashing_web(1) if crashing_now else [pod("web-7d9f8b6c5d-bcdfg")])
        poll_cluster(fake_cluster.pk)
    incident = Incident.objects.get()
    assert incident.state == "open" and len(signal_log.opened) == 1 and signal_log.resolved == []
    assert incident.events.filter(kind="recurred").count() == 2


def test_an_unreachable_cluster_is_counted_backed_off_and_reported_once(fake_cluster_api, fake_cluster, signal_log, settings, client) -> None:  # type: ignore[no-untyped-def]
    settings.AIOPS_UNREACHABLE_AFTER = 3
    fake_cluster_api.down = True
    before = metric("aiops_watch_polls_total", cluster="fake", outcome="unreachable")
    for expected_failures in (1, 2, 3, 4):
        assert poll_cluster(fake_cluster.pk) == "unreachable"
        fake_cluster.refresh_from_db()
        assert fake_cluster.consecutive_failures == expected_failures
    assert "503" in fake_cluster.last_error
    assert metric("aiops_watch_polls_total", cluster="fake", outcome="unreachable") - before == 4
    # Counted from the database at scrape time, so every web process reports the same number.
    assert b'aiops_cluster_poll_consecutive_failures{cluster="fake"} 4.0' in client.get("/metrics").content
    incident = Incident.objects.get()
    assert (incident.primary_type, incident.workload_key, incident.severity) == ("cluster_unreachable", "Cluster//fake", "critical")
    assert signal_log.opened == [incident.pk]

    # Backed off: the beat that comes right after a failure does not poll it again.
    assert watch_clusters() == []

    fake_cluster_api.down = False
    assert poll_cluster(fake_cluster.pk) == "ok"
    incident.refresh_from_db()
    assert incident.state == "resolved" and signal_log.resolved == [incident.pk]
    assert list(incident.events.order_by("id").values_list("kind", flat=True)) == ["unreachable", "reachable", "resolved"]


def test_a_poll_still_running_makes_the_next_one_skip(fake_cluster_api, fake_cluster) -> None:  # type: ignore[no-untyped-def]
    lock = _redis().lock(poll_lock_key(fake_cluster.pk), timeout=30)
    assert lock.acquire(blocking=False)
    try:
        assert poll_cluster(fake_cluster.pk) == "skipped"
        assert fake_cluster_api.requests == []
    finally:
        lock.release()
    assert poll_cluster(fake_cluster.pk) == "ok"


def test_the_poll_reads_every_page_of_a_large_cluster(fake_cluster_api, fake_cluster) -> None:  # type: ignore[no-untyped-def]
    many = [pod(f"web-7d9f8b6c5d-{i:05d}") for i in range(1199)] + crashing_web(1)
    fake_cluster_api.set(pods=many, replicasets=[replicaset()])
    poll_cluster(fake_cluster.pk)
    assert fake_cluster_api.requests.count("/api/v1/pods") == 3  # 500 + 500 + 200
    assert metric("aiops_watch_poll_objects", cluster=fake_cluster.name, kind="pods") == 1200  # every page counted
    assert Incident.objects.get().affected_pods == ["web-7d9f8b6c5d-bcdfg"]


def test_ignored_namespaces_and_disabled_clusters_are_left_alone(fake_cluster_api, fake_cluster) -> None:  # type: ignore[no-untyped-def]
    Cluster.objects.filter(pk=fake_cluster.pk).update(ignored_namespaces=["shop"])
    fake_cluster_api.set(pods=crashing_web(1))
    poll_cluster(fake_cluster.pk)
    assert not Incident.objects.exists()

    Cluster.objects.filter(pk=fake_cluster.pk).update(enabled=False)
    assert watch_clusters() == []
    assert poll_cluster(fake_cluster.pk) == "missing"


def test_the_watch_fans_out_only_due_clusters(fake_cluster_api, fake_cluster) -> None:  # type: ignore[no-untyped-def]
    from django.utils import timezone

    assert watch_clusters() == [fake_cluster.pk]  # never polled
    Cluster.objects.filter(pk=fake_cluster.pk).update(last_poll_at=timezone.now(), poll_interval=300)
    assert watch_clusters() == []  # polled a moment ago, its own interval is 5 minutes


def test_incident_events_are_append_only(fake_cluster_api, fake_cluster) -> None:  # type: ignore[no-untyped-def]
    from playbooks.models.incidents import AppendOnlyError

    fake_cluster_api.set(pods=crashing_web(1))
    poll_cluster(fake_cluster.pk)
    event = ClusterEvent.objects.get()
    event.message = "rewritten"
    with pytest.raises(AppendOnlyError):
        event.save()


def test_the_admin_lists_incidents_with_filters_and_shows_the_timeline(fake_cluster_api, fake_cluster, admin_client) -> None:  # type: ignore[no-untyped-def]
    fake_cluster_api.set(pods=crashing_web(2), replicasets=[replicaset()])
    poll_cluster(fake_cluster.pk)
    incident = Incident.objects.get()
    listing = admin_client.get("/admin/playbooks/incident/", {"state": "open", "finding_type": "crash_loop", "namespace": "shop"})
    assert listing.status_code == 200 and b"web" in listing.content
    assert admin_client.get("/admin/playbooks/incident/", {"finding_type": "hpa_maxed"}).context["cl"].result_count == 0
    detail = admin_client.get(f"/admin/playbooks/incident/{incident.pk}/change/")
    assert detail.status_code == 200
    assert b"timeline" in detail.content.lower() and b"detected" in detail.content
    events = admin_client.get("/admin/playbooks/clusterevent/", {"kind": "detected"})
    assert events.status_code == 200 and events.context["cl"].result_count == 1
