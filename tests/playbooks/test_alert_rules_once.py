"""An Alertmanager delivery that opens many incidents matches them against the rules read once
(one query for the rules, one for their clusters, one per playbook's steps), and each incident
still gets the decision a delivery of its own would give it."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from playbooks.models import Incident, PlaybookRun
from tests.playbooks.test_alertmanager import _pod_alerts, batch, post  # noqa: F401  (post: the fixture)

pytestmark = pytest.mark.django_db


def _reads(captured: CaptureQueriesContext, table: str) -> int:
    return sum(1 for q in captured.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")
               and f'FROM "{table}"' in q["sql"])


def test_a_batch_opening_many_incidents_reads_the_rules_once(post, fake_cluster) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    with CaptureQueriesContext(connection) as captured:
        response = post(batch(*_pod_alerts(30, "2026-11-23T10:00:00Z", workloads=30)))
    assert response.status_code == 200, response.content
    assert Incident.objects.filter(state="open").count() == 30
    assert _reads(captured, "playbooks_rule") == 1
    assert _reads(captured, "playbooks_step") <= 1  # one playbook matches them all
    # Each incident was decided on its own: a run, or the reason none started.
    runs = set(PlaybookRun.objects.values_list("incident_id", flat=True))
    for incident in Incident.objects.all():
        assert incident.pk in runs or incident.no_run_reason, incident.pk


def test_one_incident_per_delivery_decides_the_same(post, fake_cluster) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    post(batch(*_pod_alerts(1, "2026-11-23T10:00:00Z", workloads=1)))
    single = Incident.objects.get()
    post(batch(*[{**a, "fingerprint": "b" + a["fingerprint"][1:]} for a in _pod_alerts(2, "2026-11-23T10:00:00Z", workloads=2)]))
    other = Incident.objects.exclude(pk=single.pk).get()
    def decision(incident: Incident) -> tuple[object, ...]:
        run = PlaybookRun.objects.filter(incident=incident).first()
        return (run.playbook_name if run else None, (incident.no_run_reason or {}).get("code"))
    assert decision(single) == decision(other)
