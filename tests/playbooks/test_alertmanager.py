"""The Alertmanager webhook through Django's test client: auth, validation, idempotency, lifecycle."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from playbooks.models import ClusterEvent, Incident
from playbooks.services.announce import announce_pending

pytestmark = pytest.mark.django_db
URL = "/api/webhooks/alertmanager"
TOKEN = "am-secret-token"


def alert(name: str = "KubePodCrashLooping", status: str = "firing", fingerprint: str = "a1b2c3d4e5f60718",
          starts: str = "2026-11-23T14:55:00.123Z", **labels: str) -> dict[str, Any]:
    labels = labels or {"namespace": "shop", "pod": "web-7d9f8b6c5d-x2k4p", "container": "app", "severity": "critical"}
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} fired", "runbook_url": "https://runbooks.example/x"},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-23T15:05:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
        "fingerprint": fingerprint,
    }


def batch(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "receiver": "aiops", "status": alerts[0]["status"], "alerts": list(alerts),
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]},
        "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "version": "4", "groupKey": '{}:{alertname="x"}', "truncatedAlerts": 0,
    }


@pytest.fixture
def post(client, settings):  # type: ignore[no-untyped-def]
    settings.AIOPS_ALERTMANAGER_TOKEN = TOKEN

    def send(body: Any, token: str | None = TOKEN, raw: bytes | None = None, announce: bool = True):  # type: ignore[no-untyped-def]
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
        data = raw if raw is not None else json.dumps(body)
        response = client.post(URL, data=data, content_type="application/json", **headers)
        if announce and response.status_code == 200:
            # What a worker does once the batch commits: `playbooks.announce_incidents` with the
            # ids it opened (a real worker doing it: tests/playbooks/test_alert_announce.py).
            announce_pending(response.json()["opened"])
        return response

    return send


def test_the_webhook_is_disabled_without_a_token(client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.AIOPS_ALERTMANAGER_TOKEN = ""
    response = client.post(URL, data=json.dumps(batch(alert())), content_type="application/json",
                           HTTP_AUTHORIZATION="Bearer anything")
    assert response.status_code == 404
    assert "disabled" in response.json()["error"]
    assert not ClusterEvent.objects.exists()


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x"])
def test_a_missing_or_wrong_token_is_refused_and_nothing_stored(post, token) -> None:  # type: ignore[no-untyped-def]
    response = post(batch(alert()), token=token)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not ClusterEvent.objects.exists() and not Incident.objects.exists()


def test_a_firing_alert_opens_an_incident_on_its_workload_and_resolved_closes_it(post, fake_cluster, signal_log) -> None:  # type: ignore[no-untyped-def]
    response = post(batch(alert()))
    assert response.status_code == 200, response.content
    incident = Incident.objects.get()
    # The pod label names a Deployment's pod: the incident is the Deployment's, on the default cluster.
    assert incident.workload_key == "Deployment/shop/web"
    assert incident.cluster == fake_cluster
    assert (incident.alertname, incident.severity, incident.source) == ("KubePodCrashLooping", "critical", "alertmanager")
    assert incident.alerts == {"a1b2c3d4e5f60718": "KubePodCrashLooping"}
    assert incident.evidence["alert:KubePodCrashLooping"]["labels"]["container"] == "app"
    assert signal_log.opened == [incident.pk]

    assert post(batch(alert(status="resolved"))).status_code == 200
    incident.refresh_from_db()
    assert incident.state == "resolved" and signal_log.resolved == [incident.pk]
    assert list(incident.events.order_by("id").values_list("kind", flat=True)) == ["alert_fired", "alert_resolved", "resolved"]


def test_a_redelivered_batch_changes_nothing(post, fake_cluster, signal_log) -> None:  # type: ignore[no-untyped-def]
    body = batch(alert(), alert("NodeDown", fingerprint="ffff000011112222", node="node-b", severity="warning"))
    first = post(body).json()
    events = list(ClusterEvent.objects.values_list("id", flat=True))
    incident_state = list(Incident.objects.order_by("id").values("id", "count", "last_seen_at"))
    again = post(body).json()
    assert first["stored"] == 2 and first["duplicates"] == 0
    assert again == {"stored": 0, "duplicates": 2, "opened": [], "resolved": []}
    assert list(ClusterEvent.objects.values_list("id", flat=True)) == events
    assert list(Incident.objects.order_by("id").values("id", "count", "last_seen_at")) == incident_state
    assert len(signal_log.opened) == 2
    # The same alert firing again later (a new startsAt) is news.
    assert post(batch(alert(starts="2026-11-23T16:00:00Z"))).json()["stored"] == 1


def test_an_alert_naming_no_workload_is_keyed_by_its_fingerprint(post, db) -> None:  # type: ignore[no-untyped-def]
    post(batch(alert("Watchdog", fingerprint="00aa", severity="none")))
    post(batch(alert("Watchdog", fingerprint="00aa", starts="2026-11-23T15:00:00Z", severity="none")))
    incident = Incident.objects.get()
    assert (incident.fingerprint, incident.workload_key, incident.cluster) == ("00aa", "Alert//00aa", None)
    assert incident.count == 2 and incident.severity == "info"


def test_alert_and_poll_findings_share_one_incident(post, fake_cluster_api, fake_cluster, signal_log, settings) -> None:  # type: ignore[no-untyped-def]
    from playbooks.tasks import poll_cluster
    from tests.playbooks.test_watch import crashing_web

    settings.AIOPS_RESOLVE_AFTER = 1
    fake_cluster_api.set(pods=crashing_web(1))
    poll_cluster(fake_cluster.pk)
    post(batch(alert(deployment="web", namespace="shop", severity="warning")))
    incident = Incident.objects.get()
    assert incident.alertname == "KubePodCrashLooping" and incident.finding_types == ["crash_loop"]
    # The poll no longer sees it, but the alert still fires: it stays open.
    fake_cluster_api.set(pods=[])
    poll_cluster(fake_cluster.pk)
    incident.refresh_from_db()
    assert incident.state == "open" and incident.finding_types == []
    post(batch(alert(status="resolved", deployment="web", namespace="shop")))
    incident.refresh_from_db()
    assert incident.state == "resolved" and len(signal_log.opened) == 1


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["alerts"][1].pop("fingerprint"), "alerts[1].fingerprint"),
        (lambda b: b["alerts"][0].update(status="burning"), "alerts[0].status"),
        (lambda b: b["alerts"][0]["labels"].pop("alertname"), "alerts[0].labels"),
        (lambda b: b["alerts"][0].update(startsAt="yesterday"), "alerts[0].startsAt"),
        (lambda b: b["alerts"][1].update(fingerprint="ZZ; DROP"), "alerts[1].fingerprint"),
        (lambda b: b["alerts"][0]["labels"].update({"bad-name": "x"}), "alerts[0].labels"),
        (lambda b: b.update(alerts=[]), "alerts"),
        (lambda b: b.update(version="3"), "version"),
    ],
)
def test_a_malformed_batch_is_refused_naming_the_field_and_nothing_is_half_written(post, db, mutate, field) -> None:  # type: ignore[no-untyped-def]
    body = batch(alert(), alert("Other", fingerprint="0badc0de"))
    body = copy.deepcopy(body)
    mutate(body)
    response = post(body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(field), response.json()
    assert not ClusterEvent.objects.exists() and not Incident.objects.exists()


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""])
def test_a_body_that_is_not_a_payload_is_refused(post, db, raw) -> None:  # type: ignore[no-untyped-def]
    response = post(None, raw=raw)
    assert response.status_code == 400
    assert response.json()["error"]


def test_only_post_is_accepted(client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.AIOPS_ALERTMANAGER_TOKEN = TOKEN
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def _queries_for(post, body: dict[str, Any]) -> int:  # type: ignore[no-untyped-def]
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        response = post(body)
    assert response.status_code == 200, response.content
    assert response.json()["stored"] == len(body["alerts"])
    return len(captured)


def _pod_alerts(count: int, starts: str, status: str = "firing", workloads: int = 50) -> list[dict[str, Any]]:
    return [alert(status=status, fingerprint=f"{n:08x}", starts=starts, namespace="shop", pod=f"svc-{n % workloads}-7d9f8b6c5d-x2k4p",
                  severity="warning") for n in range(count)]


def test_the_queries_per_batch_do_not_grow_with_the_batch_size(post, fake_cluster) -> None:  # type: ignore[no-untyped-def]
    # Open 50 workloads' incidents first (opening runs each incident's signal receivers, which
    # query per incident by design); then batches that land on open incidents cost the same
    # number of round trips whether they carry 1, 5 or 50 alerts.
    post(batch(*_pod_alerts(50, "2026-11-23T10:00:00Z")))
    assert Incident.objects.count() == 50
    firing = [_queries_for(post, batch(*_pod_alerts(n, f"2026-11-23T11:0{i}:00Z"))) for i, n in enumerate((1, 5, 50))]
    assert firing[0] == firing[1] == firing[2], firing
    assert firing[2] <= 8, firing
    # A batch with resolved alerts takes the ordered path (each alert applied in turn): still constant.
    mixed = []
    for i, n in enumerate((2, 10, 50)):
        alerts = _pod_alerts(n, f"2026-11-23T12:0{i}:00Z")
        extra = _pod_alerts(n, f"2026-11-23T12:0{i}:00Z", status="resolved")
        mixed.append(_queries_for(post, batch(*alerts, *[{**a, "fingerprint": "f" + a["fingerprint"]} for a in extra])))
    assert mixed[0] == mixed[1] == mixed[2], mixed
    counts = dict(Incident.objects.values_list("workload_name", "count"))
    assert counts["svc-0"] == 1 + 1 + 1 + 1 + 1 + 1 + 1  # opened, three firing batches, three mixed batches


def test_an_alert_resolved_and_firing_again_in_one_batch_opens_a_new_incident(post, fake_cluster, signal_log) -> None:  # type: ignore[no-untyped-def]
    post(batch(alert()))
    first = Incident.objects.get()
    body = batch(alert(status="resolved"), alert(starts="2026-11-23T15:30:00Z"))
    assert post(body).json()["stored"] == 2
    first.refresh_from_db()
    second = Incident.objects.exclude(pk=first.pk).get()
    assert first.state == "resolved" and second.state == "open"
    assert second.workload_key == first.workload_key
    assert signal_log.opened == [first.pk, second.pk] and signal_log.resolved == [first.pk]


def test_concurrent_firing_batches_merge_into_the_incident(post, fake_cluster) -> None:  # type: ignore[no-untyped-def]
    # Each firing batch adds to what the row holds now (alerts, evidence, count), whatever
    # another writer put there since the batch read it.
    post(batch(alert(fingerprint="0a", severity="warning", namespace="shop", deployment="web")))
    incident = Incident.objects.get()
    Incident.objects.filter(pk=incident.pk).update(alerts={"0a": "KubePodCrashLooping", "0c": "Other"}, count=7)
    post(batch(alert("KubeDeploymentReplicasMismatch", fingerprint="0b", severity="critical",
                     namespace="shop", deployment="web")))
    incident.refresh_from_db()
    assert incident.alerts == {"0a": "KubePodCrashLooping", "0c": "Other", "0b": "KubeDeploymentReplicasMismatch"}
    assert incident.count == 8 and incident.severity == "critical" and incident.alertname == "KubePodCrashLooping"
    assert set(incident.evidence) == {"alert:KubePodCrashLooping", "alert:KubeDeploymentReplicasMismatch"}


VALID_VARIANTS = [
    lambda b: b,
    lambda b: b["alerts"][0].pop("annotations"),
    lambda b: b["alerts"][0].update(startsAt="2026-11-23T14:55:00.123456789+02:00"),
    lambda b: b["alerts"][0].update(endsAt=" 2026-11-23T15:05:00Z "),
    lambda b: b["alerts"][0].update(startsAt="2026-11-23T14:55:00"),
    lambda b: b["alerts"][0]["labels"].update(replicas=3),
    lambda b: b["alerts"][0].update(fingerprint="abc\n"),
    lambda b: b.update(version=" 4 ", truncatedAlerts="2"),
    lambda b: [b.pop(k) for k in ("version", "receiver", "groupKey", "truncatedAlerts")],
    lambda b: b["alerts"][0].update(extra={"ignored": True}),
]


@pytest.mark.parametrize("mutate", VALID_VARIANTS)
def test_the_fast_validation_agrees_with_the_serializer(mutate) -> None:  # type: ignore[no-untyped-def]
    from playbooks.views import WebhookSerializer, _fast_alerts

    body = copy.deepcopy(batch(alert(), alert("Other", fingerprint="0badc0de")))
    mutate(body)
    serializer = WebhookSerializer(data=copy.deepcopy(body))
    fast = _fast_alerts(copy.deepcopy(body))
    if fast is None:  # the serializer decides: unusual input still gets DRF's exact result
        return
    assert serializer.is_valid(), serializer.errors
    assert fast == [dict(a) for a in serializer.validated_data["alerts"]]
    assert [a["startsAt"].tzinfo for a in fast] == [a["startsAt"].tzinfo for a in serializer.validated_data["alerts"]]


def test_a_plain_alertmanager_batch_takes_the_fast_validation() -> None:
    from playbooks.views import _fast_alerts

    assert _fast_alerts(batch(alert(), alert("Other", fingerprint="0badc0de"))) is not None


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_on_the_same_workloads_open_each_incident_once_and_lose_nothing(fake_cluster, signal_log) -> None:  # type: ignore[no-untyped-def]
    import threading

    from django.db import connection

    from playbooks.services.alerts import ingest_alerts
    from playbooks.views import _fast_alerts

    # 4 deliveries at once, each 3 batches over the same 10 workloads, plus each batch delivered twice.
    bodies = [batch(*_pod_alerts(20, f"2026-11-23T1{t}:0{b}:00Z", workloads=10)) for t in range(4) for b in range(3)]
    for body in bodies:  # distinct fingerprints per batch, so every alert is news once
        for alert_ in body["alerts"]:
            alert_["fingerprint"] = f"{bodies.index(body):02x}{alert_['fingerprint']}"
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []
    opened: list[int] = []

    def deliver(mine: list[dict[str, Any]]) -> None:
        try:
            barrier.wait()
            for body in mine + mine:
                alerts = _fast_alerts(body)
                assert alerts is not None
                opened.extend(ingest_alerts(alerts).opened)
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver, args=(bodies[t * 3:t * 3 + 3],)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert Incident.objects.filter(state="open").count() == 10
    # Each incident is reported opened by exactly one batch, whose commit sends it to be announced.
    assert sorted(opened) == sorted(Incident.objects.values_list("pk", flat=True))
    # Announced once each: here, or by the session's worker if a test before this one started it
    # (the commits enqueued the tasks).
    announce_pending(opened)
    assert not Incident.objects.filter(announce_pending=True).exists()
    assert len(signal_log.opened) == len(set(signal_log.opened)) and set(signal_log.opened) <= set(opened)
    assert ClusterEvent.objects.filter(kind="alert_fired").count() == 240
    assert sum(Incident.objects.values_list("count", flat=True)) == 240
    assert all(len(alerts) == 24 for alerts in Incident.objects.values_list("alerts", flat=True))
