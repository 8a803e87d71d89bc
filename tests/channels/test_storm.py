"""Storm control and digests: many incidents at once get one summary per target; info-level
messages wait for a digest on targets that asked for one. Real PostgreSQL, the real ingest."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from channels.models import ChannelTarget, DigestEntry, NotificationStorm, OutboundMessage
from channels.storm import send_digests
from k8s.detectors import Finding
from k8s.models import Cluster
from playbooks.models import Incident
from playbooks.services.incidents import ingest_findings

pytestmark = pytest.mark.django_db


def _finding(namespace: str, name: str, severity: str = "warning", type_: str = "probe_failure") -> Finding:
    pod = f"{name}-7d4b9c6f5-abcde"
    return Finding(type_, severity, "Pod", namespace, pod, "Deployment", name,
                   f"Container app of pod {namespace}/{pod} is running but failing its readiness probe", {}, pod=pod)


@pytest.fixture
def setup(settings, no_playbooks):  # type: ignore[no-untyped-def]
    settings.AIOPS_STORM_THRESHOLD = 3
    settings.AIOPS_STORM_WINDOW = 60
    cluster = Cluster.objects.create(name="prod", kubeconfig_path="/nonexistent")
    targets = [ChannelTarget.objects.create(name="console", kind="web", address="feed", min_severity="info")]
    return cluster, targets


def _count(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _sends(target: ChannelTarget) -> list[OutboundMessage]:
    return list(OutboundMessage.objects.filter(target=target, operation="send").order_by("pk"))


def test_a_storm_gets_one_summary_and_only_critical_incidents_get_their_own(setup) -> None:  # type: ignore[no-untyped-def]
    cluster, (console,) = setup
    storms, held_back = _count("aiops_chat_storms_total"), _count("aiops_chat_storm_held_back_total")
    findings = [_finding(f"team-{i % 3}", f"svc-{i}") for i in range(8)] + [_finding("pay", "ledger", "critical", "crash_loop")]
    ingest_findings(cluster, findings)
    assert _count("aiops_chat_storms_total") - storms == 1
    assert _count("aiops_chat_storm_held_back_total") - held_back == 5

    assert Incident.objects.count() == 9
    storm = NotificationStorm.objects.get()
    assert storm.incidents == 9 and storm.ended_at is None
    sent = _sends(console)
    opened = [m for m in sent if (m.dedupe_key or "").startswith("incident_opened:")]
    summaries = [m for m in sent if (m.dedupe_key or "").startswith("storm:")]
    # The first three went out on their own; then one summary; after it only the critical one.
    assert len(opened) == 4, [m.text[:60] for m in opened]
    assert "ledger" in opened[-1].text
    assert len(summaries) == 1
    text = summaries[0].text
    assert "Incident storm on cluster prod: 9 incidents opened" in text, text
    assert "team-0 (3)" in text and "pay (1)" in text
    assert "No common cause found" in text
    assert "5 held back" in text
    assert "{" not in text and "None" not in text


def test_a_second_ingest_in_the_storm_revises_the_summary_instead_of_sending_another(setup) -> None:  # type: ignore[no-untyped-def]
    cluster, (console,) = setup
    ingest_findings(cluster, [_finding("a", f"svc-{i}") for i in range(5)])
    OutboundMessage.objects.filter(dedupe_key__startswith="storm:").update(state="delivered", platform_message_id="1")
    ingest_findings(cluster, [_finding("a", f"svc-{i}") for i in range(7)])
    summaries = OutboundMessage.objects.filter(dedupe_key__startswith="storm:")
    assert summaries.count() == 1
    edit = OutboundMessage.objects.get(operation="edit", edit_of=summaries.get())
    assert "7 incidents opened" in edit.text


def test_a_storm_ends_after_a_quiet_window(setup) -> None:  # type: ignore[no-untyped-def]
    cluster, (console,) = setup
    long_ago = timezone.now() - timedelta(minutes=10)
    ingest_findings(cluster, [_finding("a", f"svc-{i}") for i in range(5)], now=long_ago)
    assert NotificationStorm.objects.get().ended_at is None
    ingest_findings(cluster, [_finding("a", f"svc-{i}") for i in range(5)] + [_finding("b", "late")])
    storm = NotificationStorm.objects.get()
    assert storm.ended_at is not None
    late = Incident.objects.get(workload_name="late")
    assert OutboundMessage.objects.filter(incident_id=late.pk, operation="send").count() == 1


def test_info_messages_wait_for_the_digest_on_targets_that_ask_for_one(setup, settings, chat) -> None:  # type: ignore[no-untyped-def]
    cluster, (console,) = setup
    settings.AIOPS_STORM_THRESHOLD = 100
    digest = ChannelTarget.objects.create(name="quiet", kind="telegram", address="-1001234567890", min_severity="info",
                                          digest=True)
    findings = [_finding("a", "svc-1", "info"), _finding("a", "svc-2", "info"), _finding("a", "svc-3", "warning")]
    entries, digests = _count("aiops_chat_digest_entries_total"), _count("aiops_chat_digests_sent_total")
    ingest_findings(cluster, findings)
    assert _count("aiops_chat_digest_entries_total") - entries == 2
    assert len(_sends(console)) == 3
    assert [m.incident_id for m in _sends(digest)] == [Incident.objects.get(workload_name="svc-3").pk]
    assert DigestEntry.objects.filter(target=digest).count() == 2

    assert send_digests() == 1
    assert send_digests() == 0  # nothing left: a second beat sends nothing
    assert _count("aiops_chat_digests_sent_total") - digests == 1
    message = _sends(digest)[-1]
    assert message.text.startswith("🗞️ **Digest: 2 info-level messages**")
    assert "svc-1" in message.text and "svc-2" in message.text
    assert not DigestEntry.objects.filter(sent_in__isnull=True).exists()
