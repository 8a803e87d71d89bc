"""Silences and maintenance windows through /api/v1/: the same services, rights and audit as chat
and the console; bad input is a 400 naming the field."""

from __future__ import annotations

import pytest

from agents.models import AuditEntry
from playbooks.models import Incident, MaintenanceWindow, Silence

pytestmark = pytest.mark.django_db


def test_silences_are_created_listed_and_expired_through_the_api(people, api_as, make_incident,  # type: ignore[no-untyped-def]
                                                                 no_playbooks) -> None:
    cart = make_incident(workload_name="cart")
    carol = api_as(people.carol, "decide")
    refused = carol.post("/api/v1/silences/", {"matchers": 'workload="cart"', "duration": "1h", "reason": "x"},
                         format="json")
    assert refused.status_code == 403 and "carol may not create silences" in refused.json()["detail"]
    alice = api_as(people.alice, "decide")
    for body, field, words in (
        ({"matchers": "cart", "duration": "1h", "reason": "x"}, "matchers", "cannot read a matcher"),
        ({"matchers": 'workload="cart"', "duration": "soon", "reason": "x"}, "duration", "not a duration"),
        ({"matchers": 'workload="cart"', "reason": "x"}, "duration", "either a duration or ends_at"),
        ({"matchers": [{"name": "workload", "op": "==", "value": "cart"}], "duration": "1h", "reason": "x"},
         "matchers", "operator must be one of"),
        ({"matchers": 'workload="cart"', "duration": "1h"}, "reason", "required"),
    ):
        bad = alice.post("/api/v1/silences/", body, format="json")
        assert bad.status_code == 400, bad.json()
        error = bad.json()["errors"][0]
        assert error["field"] == field and words in error["message"], error
    assert not Silence.objects.exists()

    created = alice.post("/api/v1/silences/", {"matchers": [{"name": "namespace", "op": "=", "value": "shop"},
                                                            {"name": "workload", "op": "=~", "value": "cart|web"}],
                                              "duration": "2h", "reason": "db upgrade"}, format="json")
    assert created.status_code == 201, created.json()
    silence = created.json()
    assert silence["matchers_text"] == 'namespace="shop", workload=~"cart|web"'
    assert silence["state"] == "active" and silence["holds"] == [cart.pk]
    assert silence["created_by_name"].startswith("api (token ") and silence["created_by_name"].endswith(":alice")
    assert Incident.objects.get(pk=cart.pk).silenced_by_id == silence["id"]

    reader = api_as(people.carol, "read")
    assert [s["id"] for s in reader.get("/api/v1/silences/?state=active").json()["results"]] == [silence["id"]]
    assert reader.get("/api/v1/silences/?state=expired").json()["results"] == []
    assert reader.get("/api/v1/silences/?state=sometimes").status_code == 400
    assert reader.post(f"/api/v1/silences/{silence['id']}/expire/", format="json").status_code == 403  # scope

    expired = alice.post(f"/api/v1/silences/{silence['id']}/expire/", format="json")
    assert expired.status_code == 200 and expired.json()["state"] == "expired" and expired.json()["holds"] == []
    assert Incident.objects.get(pk=cart.pk).silenced_by_id is None
    assert alice.post(f"/api/v1/silences/{silence['id']}/expire/", format="json").status_code == 409
    assert alice.post("/api/v1/silences/999999/expire/", format="json").status_code == 404
    assert AuditEntry.objects.filter(action="config_change", outcome="ok").count() == 2


def test_maintenance_windows_are_listed_with_their_next_period(people, api_as) -> None:  # type: ignore[no-untyped-def]
    MaintenanceWindow.objects.create(name="weekly", namespace="shop", schedule="0 2 * * 6", duration_minutes=120,
                                     time_zone="Europe/Berlin")
    [window] = api_as(people.carol, "read").get("/api/v1/maintenance-windows/").json()["results"]
    assert window["name"] == "weekly" and window["time_zone"] == "Europe/Berlin"
    assert "T02:00:00+01:00" in window["current_or_next_start"] or "T02:00:00+02:00" in window["current_or_next_start"]
