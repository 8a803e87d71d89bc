"""Signals become outbox rows in the sender's transaction, routed by cluster, namespace and severity."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.utils import timezone

from channels.models import ChannelTarget, OutboundMessage
from k8s.models import Cluster
from playbooks.models import PlaybookRun
from playbooks.signals import incident_opened, incident_resolved, notification_requested, rca_ready, run_finished

pytestmark = pytest.mark.django_db


@pytest.fixture
def clusters(db):  # type: ignore[no-untyped-def]
    return (Cluster.objects.create(name="prod", kubeconfig_path="/etc/kube/prod"),
            Cluster.objects.create(name="staging", kubeconfig_path="/etc/kube/staging"))


def _addresses(**filters: object) -> set[str]:
    return set(OutboundMessage.objects.filter(**filters).values_list("address", flat=True))


def test_incidents_reach_only_the_targets_whose_filters_accept_them(chat, clusters, make_incident, no_playbooks) -> None:  # type: ignore[no-untyped-def]
    prod, staging = clusters
    ChannelTarget.objects.create(name="all", kind="slack", address="C0ALL", min_severity="info")
    ChannelTarget.objects.create(name="shop-critical", kind="telegram", address="-100111", namespace_regex="shop|cart",
                                 min_severity="critical")
    ChannelTarget.objects.create(name="payments", kind="discord", address="111111111111111111",
                                 namespace_regex="payments")
    staging_only = ChannelTarget.objects.create(name="staging", kind="slack", address="C0STAGE")
    staging_only.clusters.add(staging)
    ChannelTarget.objects.create(name="off", kind="slack", address="C0OFF", enabled=False)

    critical_shop = make_incident(cluster=prod, namespace="shop", severity="critical")
    warning_shop = make_incident(cluster=prod, namespace="shop", workload_name="cart", severity="warning")
    staging_payments = make_incident(cluster=staging, namespace="payments", workload_name="ledger")
    for incident in (critical_shop, warning_shop, staging_payments):
        incident_opened.send(sender=type(incident), incident=incident)

    assert _addresses(incident_id=critical_shop.pk) == {"C0ALL", "-100111"}
    assert _addresses(incident_id=warning_shop.pk) == {"C0ALL"}  # below the telegram target's minimum
    assert _addresses(incident_id=staging_payments.pk) == {"C0ALL", "111111111111111111", "C0STAGE"}
    text = OutboundMessage.objects.get(incident_id=critical_shop.pk, address="C0ALL").text
    assert f"Incident #{critical_shop.pk} crash-looping: Deployment shop/web" in text and "on cluster prod" in text

    # A redelivered event does not notify twice; the resolution follows the same routing.
    incident_opened.send(sender=type(critical_shop), incident=critical_shop)
    assert OutboundMessage.objects.filter(incident_id=critical_shop.pk).count() == 2
    incident_resolved.send(sender=type(critical_shop), incident=critical_shop)
    resolved = OutboundMessage.objects.filter(incident_id=critical_shop.pk, text__contains="Resolved")
    assert {m.address for m in resolved} == {"C0ALL", "-100111"}


def test_nothing_is_written_or_sent_when_the_event_rolls_back(chat, make_incident, no_playbooks) -> None:  # type: ignore[no-untyped-def]
    ChannelTarget.objects.create(name="all", kind="slack", address="C0ALL", min_severity="info")
    incident = make_incident()
    with pytest.raises(RuntimeError), transaction.atomic():
        incident_opened.send(sender=type(incident), incident=incident)
        assert OutboundMessage.objects.count() == 1  # written inside the sender's transaction
        raise RuntimeError("the poll failed after opening the incident")
    assert OutboundMessage.objects.count() == 0


def test_a_target_on_an_unconfigured_platform_gets_nothing(chat, settings, make_incident, no_playbooks) -> None:  # type: ignore[no-untyped-def]
    settings.TELEGRAM_BOT_TOKEN = ""
    ChannelTarget.objects.create(name="tg", kind="telegram", address="-100111", min_severity="info")
    ChannelTarget.objects.create(name="console", kind="web", address="feed", min_severity="info")
    incident = make_incident()
    incident_opened.send(sender=type(incident), incident=incident)
    assert _addresses() == {"feed"}


def test_runs_rca_and_playbook_notifications_are_announced(chat, clusters, make_incident, no_playbooks) -> None:  # type: ignore[no-untyped-def]
    ChannelTarget.objects.create(name="all", kind="slack", address="C0ALL", min_severity="info")
    incident = make_incident(cluster=clusters[0])
    run = PlaybookRun.objects.create(incident=incident, cluster=clusters[0], playbook_name="crash_loop_remediation",
                                     state="finished", outcome="resolved", summary="restarted web-5d9c7-abcde",
                                     started_at=timezone.now(), finished_at=timezone.now())
    run_finished.send(sender=PlaybookRun, run=run)
    rca_ready.send(sender=PlaybookRun, incident=incident, run=run, report={
        "failure_class": "config_error", "summary": "DATABASE_URL points at a deleted host",
        "recommended_actions": ["fix the secret", {"description": "restart the deployment"}]})
    notification_requested.send(sender=PlaybookRun, incident=incident, run=run, text="Heads up: **web** restarted",
                                severity="info")
    texts = list(OutboundMessage.objects.order_by("pk").values_list("text", flat=True))
    assert texts[0].startswith("📋 **Playbook crash_loop_remediation** resolved (verified healthy) for incident")
    assert "**A configuration error** (`config_error`)" in texts[1] and "- restart the deployment" in texts[1]
    assert texts[2] == "Heads up: **web** restarted"


@pytest.mark.parametrize(("kind", "address", "regex", "message"), [
    ("telegram", "ops-chat", "", "is not a Telegram chat id"),
    ("slack", "#alerts", "", "is not a Slack channel id"),
    ("discord", "https://example.com/hook", "", "is not a Discord channel id or https://discord.com/api/webhooks/"),
    ("web", "elsewhere", "", "use the address 'feed'"),
    ("slack", "C0ALERTS", "shop(", "Not a regular expression"),
])
def test_a_target_with_a_bad_address_or_filter_is_refused_with_the_reason(kind, address, regex, message) -> None:  # type: ignore[no-untyped-def]
    from django.core.exceptions import ValidationError

    target = ChannelTarget(name="t", kind=kind, address=address, namespace_regex=regex)
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace("?", r"\?")):
        target.full_clean()
