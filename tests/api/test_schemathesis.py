"""The API fuzzed against its own OpenAPI schema (schemathesis, in the suite): for every
operation, bounded examples of valid and invalid requests, authenticated as a superuser with an
`admin` token, through the whole Django stack on the test database. No answer may be a 5xx, and
every answer must match the schema (status code, content type, body)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.django_db
EXAMPLES = int(os.environ.get("AIOPS_FUZZ_EXAMPLES", "12"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _load() -> Any:
    """The schema the app serves, and the app itself as the target (WSGI, in this process)."""
    from aiops_site.wsgi import application

    return schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", application)


schema = _load()


@pytest.fixture(autouse=True)
def _keep_the_test_connection(db: Any) -> Iterator[None]:
    """Like Django's test client: a request must not close the test's connection at its end."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_token(people: Any, token_for: Any, make_incident: Any, ask_approval: Any, cluster_row: Any,
               settings: Any) -> str:
    """Something to find: incidents (one with a run), a pending approval, the seeded rules."""
    from playbooks.models import PlaybookRun

    settings.AIOPS_API_RATE = "100000/minute"
    incident = make_incident(cluster=cluster_row)
    make_incident(cluster=cluster_row, workload_name="api", state="resolved", resolved_at=incident.opened_at)
    PlaybookRun.objects.create(incident=incident, cluster=cluster_row, playbook_name="crash_loop_remediation")
    ask_approval()
    return str(token_for(people.root, "admin"))


@schema.parametrize()
@hypothesis_settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                            HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_every_operation_answers_within_its_schema_and_never_5xx(case: Any, fuzz_token: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {fuzz_token}"}, checks=CHECKS)
