"""The permission matrix: every endpoint x every token scope x anonymous / a signed-in user who
is not an approver (carol) / an approver (alice) / a superuser (root). The expected answer comes
from the one permission model (`api.permissions`): no token -> 401; a token without the scope ->
403; a user without the right -> 403 (the same rights chat, the console and the admin check);
else the endpoint's success. Each request gets fresh objects, so no answer depends on another."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from agents.models import AuditEntry
from api.models import ApiToken

pytestmark = pytest.mark.django_db

SCOPES = ("read", "decide", "write", "admin")
ROLES = ("anonymous", "carol", "alice", "root")
# Who holds each right (api.permissions' table): any signed-in user; those who may decide the
# object's approvals (the approvers group, superusers); those with the admin's model permissions.
RIGHTS = {"any": {"carol", "alice", "root"}, "approver": {"alice", "root"}, "admin": {"root"}}
_serial = itertools.count(1)


@dataclass
class Endpoint:
    method: str
    path: str
    scope: str
    right: str
    success: int
    setup: Callable[[Any, Any], tuple[dict[str, Any], Any]] = field(default=lambda world, user: ({}, None))
    content_type: str = "application/json"

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


class World:
    """Fresh objects for one request."""

    def __init__(self, make_incident: Any, ask_approval: Any, cluster: Any) -> None:
        self.make_incident, self.ask_approval, self.cluster = make_incident, ask_approval, cluster

    def incident(self) -> Any:
        return self.make_incident(cluster=self.cluster, workload_name=f"web-{next(_serial)}")

    def run(self) -> Any:
        from playbooks.models import PlaybookRun

        incident = self.incident()
        return PlaybookRun.objects.create(incident=incident, cluster=self.cluster, playbook_name="crash_loop_remediation",
                                          state="running")

    def playbook(self) -> str:
        from playbooks.models import Playbook, Step

        playbook = Playbook.objects.create(name=f"pb-{next(_serial)}")
        Step.objects.create(playbook=playbook, order=1, name="look", kind="rca")
        return playbook.name

    def rule(self) -> str:
        from playbooks.models import Playbook, Rule

        name = f"rule-{next(_serial)}"
        Rule.objects.create(name=name, finding_types=["crash_loop"], playbook=Playbook.objects.get(name=self.playbook()))
        return name

    def silence(self) -> int:
        from datetime import timedelta

        from django.utils import timezone

        from playbooks.models import Silence

        return Silence.objects.create(matchers=[{"name": "workload", "op": "=", "value": f"web-{next(_serial)}"}],
                                      ends_at=timezone.now() + timedelta(hours=1), reason="upgrade").pk

    def window(self) -> int:
        from playbooks.models import MaintenanceWindow

        return MaintenanceWindow.objects.create(name=f"w-{next(_serial)}", schedule="0 2 * * 6",
                                                duration_minutes=60).pk


def _ids(**ids: Any) -> dict[str, Any]:
    return ids


def _endpoints() -> list[Endpoint]:
    def playbook_body(name: str) -> dict[str, Any]:
        return {"name": name, "steps": [{"name": "look", "kind": "rca"}]}

    return [
        Endpoint("GET", "/api/v1/incidents/", "read", "any", 200),
        Endpoint("GET", "/api/v1/incidents/{incident}/", "read", "any", 200, lambda w, u: (_ids(incident=w.incident().pk), None)),
        Endpoint("GET", "/api/v1/incidents/{incident}/timeline/", "read", "any", 200,
                 lambda w, u: (_ids(incident=w.incident().pk), None)),
        Endpoint("POST", "/api/v1/incidents/{incident}/close/", "decide", "approver", 200,
                 lambda w, u: (_ids(incident=w.incident().pk), {"reason": "fixed"})),
        Endpoint("GET", "/api/v1/runs/", "read", "any", 200),
        Endpoint("GET", "/api/v1/runs/{run}/", "read", "any", 200, lambda w, u: (_ids(run=w.run().pk), None)),
        Endpoint("POST", "/api/v1/runs/", "decide", "approver", 201,
                 lambda w, u: ({}, {"incident": w.incident().pk, "playbook": "crash_loop_remediation"})),
        Endpoint("POST", "/api/v1/runs/{run}/cancel/", "decide", "approver", 200, lambda w, u: (_ids(run=w.run().pk), {})),
        Endpoint("GET", "/api/v1/approvals/", "read", "any", 200),
        Endpoint("GET", "/api/v1/approvals/{approval}/", "read", "any", 200,
                 lambda w, u: (_ids(approval=w.ask_approval().pk), None)),
        Endpoint("POST", "/api/v1/approvals/{approval}/decide/", "decide", "approver", 200,
                 lambda w, u: (_ids(approval=w.ask_approval().pk), {"decision": "approve"})),
        Endpoint("GET", "/api/v1/playbooks/", "read", "any", 200),
        Endpoint("GET", "/api/v1/playbooks/{playbook}/", "read", "any", 200, lambda w, u: (_ids(playbook=w.playbook()), None)),
        Endpoint("POST", "/api/v1/playbooks/", "write", "admin", 201,
                 lambda w, u: ({}, playbook_body(f"new-pb-{next(_serial)}"))),
        Endpoint("PUT", "/api/v1/playbooks/{playbook}/", "write", "admin", 200,
                 lambda w, u: ((ids := _ids(playbook=w.playbook())), playbook_body(ids["playbook"]))),
        Endpoint("PATCH", "/api/v1/playbooks/{playbook}/", "write", "admin", 200,
                 lambda w, u: (_ids(playbook=w.playbook()), {"description": "changed"})),
        Endpoint("DELETE", "/api/v1/playbooks/{playbook}/", "write", "admin", 204,
                 lambda w, u: (_ids(playbook=w.playbook()), None)),
        Endpoint("GET", "/api/v1/rules/", "read", "any", 200),
        Endpoint("GET", "/api/v1/rules/{rule}/", "read", "any", 200, lambda w, u: (_ids(rule=w.rule()), None)),
        Endpoint("POST", "/api/v1/rules/", "write", "admin", 201,
                 lambda w, u: ({}, {"name": f"new-rule-{next(_serial)}", "finding_types": ["oom_killed"],
                                    "playbook": w.playbook()})),
        Endpoint("PUT", "/api/v1/rules/{rule}/", "write", "admin", 200,
                 lambda w, u: ((ids := _ids(rule=w.rule())), {"name": ids["rule"], "finding_types": ["evicted"],
                                                              "playbook": w.playbook()})),
        Endpoint("PATCH", "/api/v1/rules/{rule}/", "write", "admin", 200, lambda w, u: (_ids(rule=w.rule()), {"priority": 7})),
        Endpoint("DELETE", "/api/v1/rules/{rule}/", "write", "admin", 204, lambda w, u: (_ids(rule=w.rule()), None)),
        Endpoint("GET", "/api/v1/config/export/", "read", "any", 200),
        Endpoint("POST", "/api/v1/config/import/", "write", "admin", 200,
                 lambda w, u: ({}, yaml.safe_dump({"playbooks": [playbook_body(f"imported-{next(_serial)}")]})),
                 content_type="application/yaml"),
        Endpoint("GET", "/api/v1/clusters/", "read", "any", 200),
        Endpoint("GET", "/api/v1/clusters/{cluster}/", "read", "any", 200, lambda w, u: (_ids(cluster=w.cluster.pk), None)),
        Endpoint("POST", "/api/v1/clusters/", "admin", "admin", 201,
                 lambda w, u: ({}, {"name": f"c-{next(_serial)}", "in_cluster": True})),
        Endpoint("PUT", "/api/v1/clusters/{cluster}/", "admin", "admin", 200,
                 lambda w, u: (_ids(cluster=w.cluster.pk), {"name": w.cluster.name, "kubeconfig_path": "/etc/k.yaml"})),
        Endpoint("PATCH", "/api/v1/clusters/{cluster}/", "admin", "admin", 200,
                 lambda w, u: (_ids(cluster=w.cluster.pk), {"enabled": True})),
        Endpoint("GET", "/api/v1/tools/", "read", "any", 200),
        Endpoint("GET", "/api/v1/tools/{tool}/", "read", "any", 200, lambda w, u: (_ids(tool="restart_thing"), None)),
        Endpoint("GET", "/api/v1/audit/", "admin", "admin", 200),
        Endpoint("GET", "/api/v1/audit/{entry}/", "admin", "admin", 200,
                 lambda w, u: (_ids(entry=AuditEntry.objects.order_by("id").first().pk), None)),
        Endpoint("GET", "/api/v1/silences/", "read", "any", 200),
        Endpoint("GET", "/api/v1/silences/{silence}/", "read", "any", 200, lambda w, u: (_ids(silence=w.silence()), None)),
        Endpoint("POST", "/api/v1/silences/", "decide", "approver", 201,
                 lambda w, u: ({}, {"matchers": f'workload="web-{next(_serial)}"', "duration": "1h", "reason": "r"})),
        Endpoint("POST", "/api/v1/silences/{silence}/expire/", "decide", "approver", 200,
                 lambda w, u: (_ids(silence=w.silence()), None)),
        Endpoint("GET", "/api/v1/maintenance-windows/", "read", "any", 200),
        Endpoint("GET", "/api/v1/maintenance-windows/{window}/", "read", "any", 200,
                 lambda w, u: (_ids(window=w.window()), None)),
        Endpoint("POST", "/api/v1/ask/", "read", "any", 202, lambda w, u: ({}, {"question": "what is failing?"})),
        Endpoint("GET", "/api/v1/ask/{question}/", "read", "any", 200,
                 lambda w, u: (_ids(question=_question(u)), None)),
    ]


def _question(user: Any) -> int:
    from agents.conversations import submit

    return submit(user, "api", "is shop healthy?").pk if user is not None else 1


def expected(endpoint: Endpoint, role: str, scope: str) -> int:
    if role == "anonymous":
        return 401
    if not ApiToken(scopes=[scope]).allows(endpoint.scope):
        return 403
    if role not in RIGHTS[endpoint.right]:
        return 403
    return endpoint.success


def test_every_endpoint_answers_every_scope_and_role_as_the_one_permission_model_says(  # type: ignore[no-untyped-def]
        people, token_for, make_incident, ask_approval, cluster_row, seed_playbooks) -> None:
    from drf_spectacular.generators import SchemaGenerator
    from rest_framework.test import APIClient

    endpoints = _endpoints()
    # Every operation of the API is in the matrix (a new endpoint must be added here).
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operations = {(method.upper(), re.sub(r"\{[^}]+\}", "{}", path))
                  for path, item in schema["paths"].items() for method in item}
    assert operations == {(e.method, re.sub(r"\{[^}]+\}", "{}", e.path)) for e in endpoints}

    world = World(make_incident, ask_approval, cluster_row)
    users = {"carol": people.carol, "alice": people.alice, "root": people.root}
    tokens = {(role, scope): token_for(user, scope) for role, user in users.items() for scope in SCOPES}
    wrong: list[str] = []
    checked = 0
    for endpoint in endpoints:
        for role in ROLES:
            for scope in (SCOPES if role != "anonymous" else ("-",)):
                user = users.get(role)
                ids, body = endpoint.setup(world, user)
                client = APIClient()
                if role != "anonymous":
                    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens[(role, scope)]}")
                path = endpoint.path.format(**ids)
                if endpoint.content_type == "application/json":
                    response = client.generic(endpoint.method, path, data=None if body is None else
                                              json.dumps(body), content_type="application/json")
                else:
                    response = client.generic(endpoint.method, path, data=body, content_type=endpoint.content_type)
                want = expected(endpoint, role, scope)
                checked += 1
                if response.status_code != want:
                    detail = response.json().get("detail", "") if response.content and response["Content-Type"].endswith(
                        "json") else ""
                    wrong.append(f"{endpoint.label} as {role} with {scope}: {response.status_code}, expected {want} "
                                 f"{detail}")
    assert not wrong, "\n".join(wrong)
    assert checked == len(endpoints) * (1 + 3 * len(SCOPES))
