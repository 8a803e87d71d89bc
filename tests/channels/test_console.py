"""The web console without a browser: login, the chat box on the router, bad input, metrics."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from agents.approvals import request_approval

pytestmark = pytest.mark.django_db


@pytest.fixture
def dave(db):  # type: ignore[no-untyped-def]
    return User.objects.create_user("dave", password="pw-dave-123")  # not staff: an on-call engineer


def test_the_console_needs_a_login_and_ordinary_users_can_sign_in(client, dave) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/console/")
    assert response.status_code == 302 and response["Location"] == "/console/login/?next=/console/"
    response = client.post("/console/login/", {"username": "dave", "password": "pw-dave-123", "next": "/console/"})
    assert response.status_code == 302 and response["Location"] == "/console/"
    page = client.get("/console/")
    assert page.status_code == 200
    assert b"No approvals are pending." in page.content and b"dave" in page.content


def test_the_chat_box_uses_the_router_and_escapes_what_it_shows(client, dave) -> None:  # type: ignore[no-untyped-def]
    client.force_login(dave)
    transcript = client.post("/console/chat", {"text": "/help"}, HTTP_X_REQUESTED_WITH="fetch").content.decode()
    assert "<strong>Commands</strong>" in transcript and "/k8s restart" in transcript
    transcript = client.post("/console/chat", {"text": "!incident <script>alert(1)</script>"},
                             HTTP_X_REQUESTED_WITH="fetch").content.decode()
    assert "<script>" not in transcript and "&lt;script&gt;" in transcript


@pytest.mark.parametrize(("data", "reason"), [
    ({"text": "   "}, "the message is empty"),
    ({"text": "x" * 4001}, "longer than 4000 characters"),
])
def test_the_chat_box_refuses_bad_input(client, dave, data, reason) -> None:  # type: ignore[no-untyped-def]
    client.force_login(dave)
    response = client.post("/console/chat", data)
    assert response.status_code == 400 and reason in response.content.decode()


def test_console_buttons_decide_as_the_signed_in_person(client, dave, approvers, fake_mcp) -> None:  # type: ignore[no-untyped-def]
    approval = request_approval("fake__set_value", {"key": "web", "value": "1"}, reason="test", origin="playbook")
    client.force_login(dave)
    page = client.get("/console/").content.decode()
    assert f'data-code="{approval.code}"' in page
    assert client.post(f"/console/approvals/{approval.pk}/decide", {"decision": "maybe"}).status_code == 400
    response = client.post(f"/console/approvals/{approval.pk}/decide", {"decision": "approve"}, follow=True)
    assert "dave may not decide" in response.content.decode()  # dave is not an approver
    client.force_login(approvers.alice)
    response = client.post(f"/console/approvals/{approval.pk}/decide", {"decision": "approve"}, follow=True)
    assert f"Approved {approval.code}" in response.content.decode()
    approval.refresh_from_db()
    assert approval.state == "approved" and approval.decided_by == approvers.alice


def test_inbound_outcomes_are_counted(client, chat) -> None:  # type: ignore[no-untyped-def]
    client.post("/api/webhooks/telegram", data={"update_id": 1}, content_type="application/json",
                HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN="nope")
    metrics = client.get("/metrics").content.decode()
    assert 'aiops_chat_inbound_webhooks_total{outcome="unauthorized",platform="telegram"}' in metrics


def test_the_demo_gets_a_console_feed_once_and_it_shows_incidents(client, dave, make_incident, no_playbooks) -> None:  # type: ignore[no-untyped-def]
    from channels.models import ChannelTarget
    from channels.startup import ensure_console_feed
    from playbooks.signals import incident_opened

    assert ensure_console_feed() is True
    ChannelTarget.objects.filter(kind="web").update(min_severity="critical")  # an admin's change
    assert ensure_console_feed() is False
    assert ChannelTarget.objects.get(kind="web").min_severity == "critical"

    incident = make_incident(title="web <crash> looping")
    incident_opened.send(sender=type(incident), incident=incident)
    client.force_login(dave)
    page = client.get("/console/").content.decode()
    assert f'data-id="{incident.pk}"' in page and 'data-state="open"' in page
    assert f"Incident #{incident.pk} crash-looping: Deployment shop/web" in page  # the feed
    assert "web &lt;crash&gt; looping" in page
    detail = client.get(f"/console/incidents/{incident.pk}")
    assert detail.status_code == 200 and "web-5d9c7-abcde" in detail.content.decode()
    assert client.get("/console/incidents/999999").status_code == 404
