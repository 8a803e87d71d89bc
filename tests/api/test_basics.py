"""The API's common behaviour: tokens (shown once, hashed, scoped, expiring, revocable, audited),
problem-detail errors naming the field, cursor pages, per-token throttling, the schema."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import AuditEntry
from api.models import ApiToken, digest

pytestmark = pytest.mark.django_db


def test_a_token_is_stored_as_a_digest_and_works_until_revoked_or_expired(people, token_for, api_as, client) -> None:  # type: ignore[no-untyped-def]
    clear = token_for(people.alice, "read")
    stored = ApiToken.objects.get(user=people.alice)
    assert clear.startswith(f"aiops_{stored.prefix}_") and stored.digest == digest(clear)
    assert clear not in str(list(ApiToken.objects.values()))  # never stored in clear
    created = AuditEntry.objects.get(action="api_token", outcome="created")
    assert stored.prefix in created.detail and "alice" in created.detail

    ok = client.get("/api/v1/incidents/", HTTP_AUTHORIZATION=f"Bearer {clear}")
    assert ok.status_code == 200 and ok.json()["results"] == []
    ApiToken.objects.filter(pk=stored.pk).update(expires_at=timezone.now() - timedelta(seconds=1),
                                                 created_at=timezone.now() - timedelta(days=2))
    expired = client.get("/api/v1/incidents/", HTTP_AUTHORIZATION=f"Bearer {clear}")
    assert expired.status_code == 401 and expired["Content-Type"] == "application/problem+json"
    assert expired.json()["detail"] == f"API token {stored.prefix} is expired"
    assert expired["WWW-Authenticate"].startswith("Bearer")
    refused = AuditEntry.objects.filter(action="access_refused").latest("id")
    assert refused.actor == f"api:alice (token {stored.prefix})" and "expired" in refused.detail

    from api.tokens import revoke_token

    other = token_for(people.alice, "read")
    assert revoke_token(ApiToken.objects.get(digest=digest(other)), by=people.root, via="admin")
    assert client.get("/api/v1/incidents/", HTTP_AUTHORIZATION=f"Bearer {other}").json()["detail"].endswith("revoked")
    assert client.get("/api/v1/incidents/", HTTP_AUTHORIZATION="Bearer aiops_nope_nope").status_code == 401
    assert client.get("/api/v1/incidents/").status_code == 401


def test_errors_are_problem_details_naming_the_field(people, api_as, make_incident) -> None:  # type: ignore[no-untyped-def]
    api = api_as(people.alice, "decide")
    bad_filter = api.get("/api/v1/incidents/?state=sleeping")
    assert bad_filter.status_code == 400 and bad_filter["Content-Type"] == "application/problem+json"
    body = bad_filter.json()
    assert body["status"] == 400 and body["title"] == "Invalid request"
    assert body["errors"][0]["field"] == "state" and "sleeping" in body["errors"][0]["message"]

    incident = make_incident()
    no_reason = api.post(f"/api/v1/incidents/{incident.pk}/close/", {}, format="json")
    assert no_reason.status_code == 400 and no_reason.json()["errors"][0]["field"] == "reason"
    missing = api.get("/api/v1/incidents/999999/")
    assert missing.status_code == 404 and missing.json()["type"].endswith("/not-found")
    assert api.get("/api/v1/incidents/?cursor=garbage").status_code == 404


def test_an_instant_with_any_offset_python_parses_is_a_filter_or_a_400(people, api_as, make_incident) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL refuses offsets past +-15:59 (a DataError, once a 500 found by schemathesis):
    the filters convert to UTC first, and an instant that leaves the calendar is a 400 naming it."""
    make_incident()
    api = api_as(people.root, "admin")
    far_offset = api.get("/api/v1/incidents/", {"opened_since": "0750-10-23T02:52:15.635908-22:17"})
    assert far_offset.status_code == 200 and len(far_offset.json()["results"]) == 1
    audit = api.get("/api/v1/audit/", {"since": "2020-01-01T00:00:00+23:59", "until": "9999-12-31T23:00:00-20:00"})
    assert audit.status_code == 400 and audit.json()["errors"][0]["field"] == "until"
    before_year_one = api.get("/api/v1/incidents/", {"opened_since": "0001-01-01T00:00:00+05:00"})
    assert before_year_one.status_code == 400
    assert before_year_one.json()["errors"][0]["field"] == "opened_since"


def test_pages_follow_a_cursor_newest_first(people, api_as, make_incident) -> None:  # type: ignore[no-untyped-def]
    for n in range(7):
        make_incident(workload_name=f"web-{n}")
    api = api_as(people.carol, "read")
    first = api.get("/api/v1/incidents/?limit=5").json()
    assert [i["workload_name"] for i in first["results"]] == [f"web-{n}" for n in (6, 5, 4, 3, 2)]
    second = api.get(first["next"]).json()
    assert [i["workload_name"] for i in second["results"]] == ["web-1", "web-0"] and second["next"] is None


def test_a_token_is_throttled_on_its_own(people, api_as, settings) -> None:  # type: ignore[no-untyped-def]
    settings.AIOPS_API_RATE = "3/minute"
    fast, other = api_as(people.carol, "read"), api_as(people.alice, "read")
    assert [fast.get("/api/v1/runs/").status_code for _ in range(4)] == [200, 200, 200, 429]
    throttled = fast.get("/api/v1/runs/")
    assert throttled["Content-Type"] == "application/problem+json" and int(throttled["Retry-After"]) > 0
    assert other.get("/api/v1/runs/").status_code == 200


def test_the_schema_is_openapi_3_and_documents_problems(client) -> None:  # type: ignore[no-untyped-def]
    from drf_spectacular.validation import validate_schema

    response = client.get("/api/v1/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    validate_schema(schema)  # against the OpenAPI 3.0 JSON schema drf-spectacular ships
    assert schema["openapi"].startswith("3.")
    close = schema["paths"]["/api/v1/incidents/{id}/close/"]["post"]
    assert "application/problem+json" in close["responses"]["403"]["content"]
    assert schema["components"]["securitySchemes"]["token"]["scheme"] == "bearer"


def test_a_listed_incident_reads_as_its_detail_does(people, api_as, make_incident, cluster_row) -> None:  # type: ignore[no-untyped-def]
    """The list renders rows, the detail the model: the same fields, the same values."""
    make_incident(cluster=cluster_row)
    make_incident(cluster=None, workload_name="", workload_kind="", namespace="", fingerprint="ab12", primary_type="",
                  finding_types=[], alertname="KubeQuotaExceeded")
    api = api_as(people.carol, "read")
    for listed in api.get("/api/v1/incidents/").json()["results"]:
        detail = api.get(f"/api/v1/incidents/{listed['id']}/").json()
        assert {key: detail[key] for key in listed} == listed
    assert {i["workload_key"] for i in api.get("/api/v1/incidents/").json()["results"]} == {
        "Deployment/shop/web", "Alert//ab12"}
