"""Incidents an Alertmanager batch opens are announced after its commit, by a task: the batch
writes rows and answers; the rules, runs and notifications follow, once each, and nothing is
lost when the task's message is (the sweep) or when the incident resolves first."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY

from channels.models import ChannelTarget, OutboundMessage
from playbooks.models import Incident, PlaybookRun
from playbooks.services.announce import announce_pending
from tests.conftest import wait_for
from tests.playbooks.test_alertmanager import TOKEN, URL, _pod_alerts, alert, batch


def _delay_count(path: str) -> float:
    return REGISTRY.get_sample_value("aiops_incident_announce_delay_seconds_count", {"path": path}) or 0.0


@pytest.fixture
def target(db, settings):  # type: ignore[no-untyped-def]
    settings.AIOPS_STORM_THRESHOLD = 1000  # every incident's own message (storm control has tests of its own)
    return ChannelTarget.objects.create(name="console", kind="web", address="feed", min_severity="info")


@pytest.fixture
def send(client, settings):  # type: ignore[no-untyped-def]
    """POST without announcing: what the webhook alone does."""
    settings.AIOPS_ALERTMANAGER_TOKEN = TOKEN

    def post(body):  # type: ignore[no-untyped-def]
        response = client.post(URL, data=json.dumps(body), content_type="application/json",
                               HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200, response.content
        return response.json()

    return post


def _announced(incident: Incident) -> bool:
    return OutboundMessage.objects.filter(dedupe_key__startswith=f"incident_opened:{incident.pk}:").exists()


@pytest.mark.django_db
def test_the_batch_writes_rows_and_its_commit_enqueues_their_announcement(
        send, fake_cluster, seed_playbooks, target, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks() as callbacks:
        body = send(batch(*_pod_alerts(30, "2026-11-23T10:00:00Z", workloads=30)))
    assert len(body["opened"]) == 30
    assert len(callbacks) == 1  # one task for the batch, sent after commit
    assert Incident.objects.filter(announce_pending=True).count() == 30
    assert not PlaybookRun.objects.exists() and not OutboundMessage.objects.exists()
    assert not Incident.objects.filter(no_run_reason__isnull=False).exists()  # not decided yet

    before = _delay_count("task")
    assert sorted(announce_pending(body["opened"])) == sorted(body["opened"])
    assert _delay_count("task") == before + 30
    assert not Incident.objects.filter(announce_pending=True).exists()
    runs = set(PlaybookRun.objects.values_list("incident_id", flat=True))
    for incident in Incident.objects.all():
        assert incident.pk in runs or incident.no_run_reason, incident.pk
        assert _announced(incident)
    # Announced once: the task delivered twice (a redelivered message) does nothing the second time.
    messages, run_count = OutboundMessage.objects.count(), PlaybookRun.objects.count()
    assert announce_pending(body["opened"]) == []
    assert (OutboundMessage.objects.count(), PlaybookRun.objects.count()) == (messages, run_count)


@pytest.mark.django_db
def test_opening_fifty_incidents_costs_the_batch_no_more_queries_than_opening_one(send, fake_cluster, seed_playbooks) -> None:  # type: ignore[no-untyped-def]
    counts = []
    for n, starts in ((1, "2026-11-23T10:00:00Z"), (50, "2026-11-23T10:01:00Z")):
        alerts = [{**a, "labels": {**a["labels"], "namespace": f"ns{n}"}} for a in _pod_alerts(n, starts, workloads=n)]
        with CaptureQueriesContext(connection) as captured:
            body = send(batch(*alerts))
        assert len(body["opened"]) == n
        counts.append(len(captured))
    assert counts[0] == counts[1], counts


@pytest.mark.django_db
def test_the_sweep_announces_what_a_lost_task_would_have(send, fake_cluster, seed_playbooks, target, settings) -> None:  # type: ignore[no-untyped-def]
    settings.AIOPS_ANNOUNCE_SWEEP_AFTER = 15
    body = send(batch(alert()))
    (pk,) = body["opened"]
    assert announce_pending(None) == []  # too young: its task is probably on its way
    before = _delay_count("sweep")
    later = timezone.now() + timedelta(seconds=16)
    assert announce_pending(None, now=later) == [pk]
    assert _delay_count("sweep") == before + 1
    incident = Incident.objects.get(pk=pk)
    assert not incident.announce_pending and _announced(incident)
    assert announce_pending([pk]) == [] and announce_pending(None, now=later) == []  # the late task: nothing


@pytest.mark.django_db
def test_an_incident_resolved_before_its_announcement_is_announced_opened_then_resolved(
        send, fake_cluster, seed_playbooks, target, signal_log) -> None:  # type: ignore[no-untyped-def]
    body = send(batch(alert()))
    (pk,) = body["opened"]
    before = _delay_count("resolve")
    send(batch(alert(status="resolved")))
    incident = Incident.objects.get(pk=pk)
    assert incident.state == "resolved" and not incident.announce_pending
    assert signal_log.opened == [pk] and signal_log.resolved == [pk]
    assert _delay_count("resolve") == before + 1
    keys = list(OutboundMessage.objects.filter(incident_id=pk).order_by("pk").values_list("dedupe_key", flat=True))
    assert [k.split(":")[0] for k in keys] == ["incident_opened", "incident_resolved"], keys
    assert announce_pending([pk]) == []  # the task, arriving late, finds nothing to do
    assert signal_log.opened == [pk]


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_announces_a_committed_batch(celery_worker, fake_cluster, seed_playbooks, target, client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.AIOPS_ALERTMANAGER_TOKEN = TOKEN
    response = client.post(URL, data=json.dumps(batch(*_pod_alerts(5, "2026-11-23T10:00:00Z", workloads=5))),
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    opened = response.json()["opened"]
    assert len(opened) == 5
    wait_for(lambda: not Incident.objects.filter(pk__in=opened, announce_pending=True).exists(), timeout=30,
             message="the worker announcing the batch's incidents")
    for incident in Incident.objects.filter(pk__in=opened):
        assert _announced(incident)
        assert PlaybookRun.objects.filter(incident=incident).exists() or incident.no_run_reason
    assert OutboundMessage.objects.filter(dedupe_key__startswith="incident_opened:").count() == 5


@pytest.mark.django_db
def test_a_batch_whose_incident_its_resolver_announced_is_announced_one_by_one(
        send, fake_cluster, seed_playbooks, target, signal_log) -> None:  # type: ignore[no-untyped-def]
    alerts = _pod_alerts(3, "2026-11-23T10:00:00Z", workloads=3)
    body = send(batch(*alerts))
    first = body["opened"][0]
    resolved = Incident.objects.get(pk=first)
    send(batch({**next(a for a in alerts if resolved.workload_name in a["labels"]["pod"]), "status": "resolved"}))
    assert signal_log.opened == [first]  # its resolver announced it, then resolved it
    assert sorted(announce_pending(body["opened"])) == sorted(body["opened"][1:])
    assert sorted(signal_log.opened) == sorted(body["opened"])  # each once
    assert not Incident.objects.filter(announce_pending=True).exists()


@pytest.mark.django_db(transaction=True)
def test_an_announcement_gives_way_to_a_row_held_long_and_comes_back(fake_cluster, target) -> None:  # type: ignore[no-untyped-def]
    """A writer holding the incident's row past the lock timeout (a resolver waiting on something
    the announcement holds would deadlock) makes the announcement roll back and try again."""
    import threading

    from django.db import connections, transaction

    now = timezone.now()
    # Written as a batch writes it, without the task its commit would send (the session's worker
    # may be running and would announce it first).
    pk = Incident.objects.create(cluster=fake_cluster, workload_kind="Deployment", namespace="shop", workload_name="web",
                                 source="alertmanager", opened_at=now, last_seen_at=now, alertname="KubePodCrashLooping",
                                 alerts={"a1": "KubePodCrashLooping"}, severity="warning", announce_pending=True).pk
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                Incident.objects.select_for_update(no_key=True).get(pk=pk)
                locked.set()
                release.wait(10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(10)
    threading.Timer(0.5, release.set).start()  # longer than the 200 ms lock timeout
    assert announce_pending([pk]) == [pk]
    holder.join(10)
    incident = Incident.objects.get(pk=pk)
    assert not incident.announce_pending and incident.no_run_reason
    assert OutboundMessage.objects.filter(dedupe_key__startswith=f"incident_opened:{pk}:").count() == 1


@pytest.mark.django_db
def test_a_storm_announced_as_one_batch_counts_each_incident_once_and_writes_its_row_once(
        send, fake_cluster, settings) -> None:  # type: ignore[no-untyped-def]
    from channels.models import NotificationStorm

    settings.AIOPS_STORM_THRESHOLD = 5
    ChannelTarget.objects.create(name="console", kind="web", address="feed", min_severity="info")
    body = send(batch(*_pod_alerts(20, "2026-11-23T10:00:00Z", workloads=20)))
    with CaptureQueriesContext(connection) as captured:
        assert len(announce_pending(body["opened"])) == 20
    storm = NotificationStorm.objects.get()
    # The first 5 are counted before it starts (the threshold), the 6th starts it, 14 follow:
    # the batch's incidents count as they are announced, not all 20 at once (they are all in the
    # table before the first is announced).
    assert storm.incidents == 20
    assert storm.held_back == 15  # warning-level, no parent: from the 6th on, in the summary only
    assert OutboundMessage.objects.filter(dedupe_key__startswith="incident_opened:").count() == 5
    assert OutboundMessage.objects.filter(dedupe_key__startswith=f"storm:{storm.pk}:").count() == 1
    updates = [q["sql"] for q in captured.captured_queries
               if q["sql"].startswith('UPDATE "channels_notificationstorm"')]
    assert len(updates) <= 2, updates  # its count, once for the batch (and the summary's refresh)


@pytest.mark.django_db
def test_a_broker_that_is_down_at_commit_leaves_the_batch_stored_and_the_sweep_announces_it(
        send, fake_cluster, target, settings, monkeypatch, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    import kombu.exceptions

    from playbooks import tasks

    def broker_down(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.announce_incidents, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        body = send(batch(alert()))  # 200: stored, whatever the broker says
    (pk,) = body["opened"]
    assert Incident.objects.get(pk=pk).announce_pending
    assert announce_pending(None, now=timezone.now() + timedelta(seconds=settings.AIOPS_ANNOUNCE_SWEEP_AFTER + 1)) == [pk]
    assert _announced(Incident.objects.get(pk=pk))
