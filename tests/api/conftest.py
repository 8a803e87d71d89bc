"""The API's fixtures: people in each role and their tokens, and a client that sends a token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from rest_framework.test import APIClient


@dataclass
class People:
    carol: Any  # signed in, not an approver
    alice: Any  # in the approvers group
    bob: Any  # in the approvers group
    root: Any  # superuser


@pytest.fixture
def people(approvers: Any) -> People:
    from django.contrib.auth.models import User

    root = User.objects.create_superuser("root", password="x")
    return People(carol=approvers.carol, alice=approvers.alice, bob=approvers.bob, root=root)


@pytest.fixture
def token_for(db: Any) -> Any:
    """token_for(user, *scopes) -> the clear text of a new token."""
    from api.tokens import create_token

    def make(user: Any, *scopes: str, days: int = 30) -> str:
        _token, clear = create_token(user, "tests", list(scopes or ("admin",)), days, by=user, via="tests")
        return clear

    return make


@pytest.fixture
def api_as(token_for: Any) -> Any:
    """api_as(user, *scopes) -> an APIClient sending that user's new token (no user: anonymous)."""

    def make(user: Any = None, *scopes: str) -> APIClient:
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user, *scopes)}")
        return client

    return make


@pytest.fixture
def registry(db: Any) -> Any:
    """Registry rows for approvals to name (approvals from playbook steps never call their tool
    themselves: the step does, which these tests do not run)."""
    from agents.models import MCPServer, MCPTool

    server = MCPServer.objects.create(name="demo", transport="stdio", command="/bin/true")
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    for name, risk in (("list_things", "LOW"), ("restart_thing", "MEDIUM"), ("drain_thing", "HIGH")):
        MCPTool.objects.create(server=server, name=name, remote_name=name, risk=risk, input_schema=schema,
                               description=f"{name} (test)", read_only_hint=risk == "LOW")
    return server


@pytest.fixture
def ask_approval(registry: Any) -> Any:
    """ask_approval(tool="restart_thing", requested_by=None) -> a pending approval, as a playbook step asks."""
    from agents.approvals import request_approval

    def make(tool: str = "restart_thing", requested_by: Any = None) -> Any:
        return request_approval(tool, {"name": "web"}, reason="web is crash looping", origin="playbook",
                                requested_by=requested_by)

    return make


@pytest.fixture
def cluster_row(db: Any) -> Any:
    """A cluster record (never polled in these tests: nothing commits the runs' first steps)."""
    from k8s.models import Cluster

    return Cluster.objects.create(name="prod", kubeconfig_path="/etc/aiops/prod.kubeconfig", is_default=True)
