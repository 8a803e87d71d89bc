"""Silences and maintenance windows: matchers, durations and cron periods; what a silence does
to an incident's notifications and runs, and what a window does to notifications (on the
database, through the real receivers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from channels.models import ChannelTarget, OutboundMessage
from playbooks.maintenance import current_period, next_period, schedule_error, zone_error
from playbooks.models import ClusterEvent, Incident, MaintenanceWindow, PlaybookRun, Silence
from playbooks.services.silences import SilenceRefused, create_silence, end_silence, expire_silence, sweep
from playbooks.silences import MatcherError, incident_values, matches, parse_duration, parse_matchers


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- matchers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, reason", [
    ("", "at least one matcher"),
    ('namespace=~".*"', "other than an empty value"),
    ('app!="web"', "other than an empty value"),
    ('namespace="shop" workload', "cannot read a matcher"),
    ('namespace=="shop"', "cannot read a matcher"),
    ('workload=~"cart(("', "not a valid regular expression"),
    ('-bad-="x"', "neither one of"),
    ('namespace="' + "x" * 301 + '"', "longer than 300"),
])
def test_bad_matchers_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(MatcherError, match=reason):
        parse_matchers(text)


def test_matchers_read_as_alertmanager_writes_them() -> None:
    parsed = parse_matchers('{namespace="shop", workload=~"cart|web", app.kubernetes.io/name!="db", type=crash_loop}')
    assert [m.text() for m in parsed] == [
        'namespace="shop"', 'workload=~"cart|web"', 'app.kubernetes.io/name!="db"', 'finding_type="crash_loop"']
    assert parse_matchers([m.as_dict() for m in parsed]) == parsed
    assert parse_matchers('reason="say \\"hi\\""')[0].value == 'say "hi"'


def test_matching_follows_alertmanager(make_incident, cluster) -> None:  # type: ignore[no-untyped-def]
    incident = make_incident(cluster=cluster, workload_name="cart", finding_types=["crash_loop", "oom_killed"],
                             evidence={"crash_loop": {"labels": {"app": "cart", "tier": "web"}}},
                             alerts={"f1": "KubePodCrashLooping"})
    values = incident_values(incident)

    def hit(text: str) -> bool:
        return matches(text, values)

    assert hit('namespace="shop", workload="cart"')
    assert hit(f'cluster="{cluster.name}"')
    assert hit('workload=~"car.*"') and not hit('workload=~"car"')  # regexes match the whole value
    assert hit('finding_type="oom_killed"') and hit('namespace="shop", finding_type!="image_pull_failure"')
    assert not hit('namespace="shop", finding_type!="oom_killed"')  # none of its types may be it
    assert hit('alertname="KubePodCrashLooping"')
    assert hit('app="cart", tier=~"web|api"') and not hit('app="web"')
    assert hit('namespace="shop", owner!="payments"')  # an absent label is empty
    assert not hit('namespace="shop", kind="StatefulSet"')  # every matcher must hold


@pytest.mark.parametrize("text, expected", [("90m", timedelta(minutes=90)), ("2h", timedelta(hours=2)),
                                            ("1h30m", timedelta(minutes=90)), ("3d", timedelta(days=3))])
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "2", "two hours", "30s", "91d", "1h 30m", "-1h"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(MatcherError):
        parse_duration(text)


# --- maintenance periods ----------------------------------------------------------------------


def _window(**fields: Any) -> MaintenanceWindow:
    defaults: dict[str, Any] = {"name": "w", "schedule": "0 2 * * 6", "duration_minutes": 120, "time_zone": "UTC"}
    return MaintenanceWindow(**{**defaults, **fields})


def test_a_window_is_on_from_each_start_for_its_duration_in_its_own_time_zone() -> None:
    window = _window(time_zone="Europe/Berlin")  # Saturdays 02:00-04:00 Berlin time
    saturday = datetime(2026, 7, 4, 0, 30, tzinfo=UTC)  # 02:30 in Berlin (summer time)
    period = current_period(window, saturday)
    assert period is not None and period.start.hour == 2 and period.end - period.start == timedelta(hours=2)
    assert current_period(window, datetime(2026, 7, 4, 2, 0, tzinfo=UTC)) is None  # 04:00 Berlin: over
    assert current_period(window, datetime(2026, 7, 3, 23, 59, tzinfo=UTC)) is None  # 01:59 Berlin
    # Winter: the same local hours are an hour later in UTC.
    assert current_period(window, datetime(2026, 12, 5, 1, 0, tzinfo=UTC)) is not None
    assert current_period(window, datetime(2026, 12, 5, 0, 30, tzinfo=UTC)) is None
    upcoming = next_period(window, datetime(2026, 12, 5, 4, 0, tzinfo=UTC))
    assert upcoming is not None and (upcoming.start.day, upcoming.start.hour) == (12, 2)
    # A period is on from its first second.
    assert current_period(_window(schedule="30 14 * * *", duration_minutes=1),
                          datetime(2026, 7, 4, 14, 30, tzinfo=UTC)) is not None


def test_bad_schedules_and_zones_are_refused_with_the_reason() -> None:
    assert "five fields" in (schedule_error("0 2 * *") or "")
    assert "not a valid cron expression" in (schedule_error("61 2 * * *") or "")
    assert schedule_error("0 2 * * sat") is None
    assert "not a known time zone" in (zone_error("Mars/Olympus") or "")
    assert zone_error("Europe/Berlin") is None


# --- a silence and an incident ------------------------------------------------------------------


@pytest.fixture
def cluster(db):  # type: ignore[no-untyped-def]
    from k8s.models import Cluster

    return Cluster.objects.create(name="prod", is_default=True, in_cluster=True)


@pytest.fixture
def telegram_target(chat):  # type: ignore[no-untyped-def]
    return ChannelTarget.objects.create(name="tg", kind="telegram", address="-1001234", namespace_regex="shop")


def _incident_messages(incident: Incident) -> list[str]:
    return list(OutboundMessage.objects.filter(incident_id=incident.pk).values_list("text", flat=True))


def test_only_approvers_silence_and_bad_input_is_refused(approvers, make_incident) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SilenceRefused, match="carol may not create silences"):
        create_silence(matchers_input='namespace="shop"', duration=timedelta(hours=1), reason="x",
                       user=approvers.carol, via="web")
    with pytest.raises(SilenceRefused, match="needs a reason"):
        create_silence(matchers_input='namespace="shop"', duration=timedelta(hours=1), reason=" ",
                       user=approvers.alice, via="web")
    with pytest.raises(SilenceRefused, match="cannot read a matcher"):
        create_silence(matchers_input="shop/cart", duration=timedelta(hours=1), reason="x", user=approvers.alice,
                       via="web")
    assert not Silence.objects.exists()
    silence = create_silence(matchers_input='namespace="shop"', duration=timedelta(hours=1), reason="upgrade",
                             user=approvers.alice, via="telegram")
    assert (silence.created_by, silence.created_by_name) == (approvers.alice, "telegram:alice")
    with pytest.raises(SilenceRefused, match="carol may not expire silences"):
        expire_silence(silence.pk, user=approvers.carol, via="web")
    from agents.models import AuditEntry

    assert AuditEntry.objects.filter(action="config_change", outcome="refused", actor="web:carol").count() == 2
    assert AuditEntry.objects.filter(action="config_change", outcome="ok", actor="telegram:alice").exists()


def test_an_incident_that_opens_silenced_is_recorded_and_announced_only_when_the_silence_ends(  # type: ignore[no-untyped-def]
        approvers, cluster, telegram_target, seed_playbooks) -> None:
    from k8s.detectors import Finding
    from playbooks.services.incidents import ingest_findings

    created, expired = _metric("aiops_silences_total", action="created", via="web"), _metric(
        "aiops_silences_total", action="expired", via="slack")
    announced = _metric("aiops_silence_incidents_released_total", outcome="announced")
    silence = create_silence(matchers_input='namespace="shop", workload="cart"', duration=timedelta(hours=1),
                             reason="db upgrade", user=approvers.alice, via="web")
    assert _metric("aiops_silences_total", action="created", via="web") == created + 1
    silenced_before = _metric("aiops_incidents_silenced_total", when="opened")
    finding = Finding(type="crash_loop", severity="critical", kind="Pod", namespace="shop", name="cart-1",
                      owner_kind="Deployment", owner_name="cart", pod="cart-1", message="cart-1 crash-looping",
                      evidence={"container": "app", "restart_count": 9})
    ingest_findings(cluster, [finding])
    incident = Incident.objects.get(workload_name="cart")
    assert incident.silenced_by == silence
    assert incident.no_run_reason["code"] == "silenced"
    assert incident.no_run_reason["text"].startswith(f"silenced by #{silence.pk} until ")
    assert not PlaybookRun.objects.filter(incident=incident).exists()
    assert _incident_messages(incident) == []
    [line] = ClusterEvent.objects.filter(incident=incident, kind="silenced")
    assert line.message.startswith(f"Silenced by #{silence.pk} until") and "db upgrade; web:alice" in line.message
    assert _metric("aiops_incidents_silenced_total", when="opened") == silenced_before + 1

    # Still failing at the next poll: still quiet. Then the silence ends (early, by a person).
    ingest_findings(cluster, [finding])
    assert _incident_messages(incident) == [] and not PlaybookRun.objects.filter(incident=incident).exists()
    expire_silence(silence.pk, user=approvers.bob, via="slack")
    assert _metric("aiops_silences_total", action="expired", via="slack") == expired + 1
    assert _metric("aiops_silence_incidents_released_total", outcome="announced") == announced + 1
    incident.refresh_from_db()
    assert incident.silenced_by is None and incident.no_run_reason is None
    [text] = _incident_messages(incident)
    assert text.startswith(f"🔔 Silence #{silence.pk} expired early by slack:bob and this is still failing.")
    assert OutboundMessage.objects.get(incident_id=incident.pk).dedupe_key.startswith(
        f"incident_opened:{incident.pk}:silence-{silence.pk}:")
    assert PlaybookRun.objects.filter(incident=incident, rule__name="crash_loop").exists()  # as if just opened
    assert ClusterEvent.objects.filter(incident=incident, kind="silence_ended").count() == 1
    assert end_silence(silence.pk) == 0  # claimed once: a second sweeper does nothing


def test_a_new_silence_takes_open_incidents_and_quiets_their_notifications(  # type: ignore[no-untyped-def]
        approvers, make_incident, cluster, telegram_target, no_playbooks) -> None:
    from channels.receivers import on_incident_resolved

    cart = make_incident(cluster=cluster, workload_name="cart")
    web = make_incident(cluster=cluster, workload_name="web")
    suppressed = _metric("aiops_notifications_quieted_total", reason="silence")
    silence = create_silence(matchers_input='workload=~"cart|cache"', duration=timedelta(minutes=30),
                             reason="load test", user=approvers.alice, via="web")
    cart.refresh_from_db()
    web.refresh_from_db()
    assert cart.silenced_by == silence and web.silenced_by is None
    on_incident_resolved(sender=Incident, incident=cart)
    on_incident_resolved(sender=Incident, incident=web)
    assert _incident_messages(cart) == [] and len(_incident_messages(web)) == 1
    assert _metric("aiops_notifications_quieted_total", reason="silence") == suppressed + 1


def test_a_silence_that_starts_later_is_applied_by_the_sweep_and_ends_by_it(  # type: ignore[no-untyped-def]
        approvers, make_incident, cluster, no_playbooks) -> None:
    cart = make_incident(cluster=cluster, workload_name="cart")
    now = timezone.now()
    silence = create_silence(matchers_input='workload="cart"', starts_at=now + timedelta(minutes=5),
                             ends_at=now + timedelta(minutes=10), reason="window", user=approvers.alice, via="web")
    assert Incident.objects.get(pk=cart.pk).silenced_by is None
    assert sweep(now + timedelta(minutes=6)) == {"applied": 1, "ended": 0}
    assert Incident.objects.get(pk=cart.pk).silenced_by == silence
    assert sweep(now + timedelta(minutes=11)) == {"applied": 0, "ended": 1}
    assert Incident.objects.get(pk=cart.pk).silenced_by is None
    assert sweep(now + timedelta(minutes=12)) == {"applied": 0, "ended": 0}


def test_maintenance_marks_or_holds_notifications(make_incident, cluster, telegram_target,  # type: ignore[no-untyped-def]
                                                  no_playbooks) -> None:
    from channels.receivers import on_incident_resolved

    now = timezone.now().astimezone(UTC)
    window = MaintenanceWindow.objects.create(name="shop upgrade", cluster=cluster, namespace="shop",
                                              schedule=f"{now.minute} {now.hour} * * *", duration_minutes=60)
    marked = make_incident(cluster=cluster, workload_name="cart")
    elsewhere = make_incident(cluster=cluster, namespace="payments", workload_name="ledger")
    ChannelTarget.objects.filter(pk=telegram_target.pk).update(namespace_regex="")
    for incident in (marked, elsewhere):
        on_incident_resolved(sender=Incident, incident=incident)
    [text] = _incident_messages(marked)
    assert text.startswith(f"🔧 In maintenance window shop upgrade (namespace shop in cluster {cluster.name}) "
                           "until ")
    assert not _incident_messages(elsewhere)[0].startswith("🔧")

    window.notifications = "hold"
    window.save()
    held = make_incident(cluster=cluster, workload_name="web")
    on_incident_resolved(sender=Incident, incident=held)
    message = OutboundMessage.objects.get(incident_id=held.pk)
    assert message.text.startswith("🔧 Held during maintenance window shop upgrade")
    period = current_period(window)
    assert period is not None and message.next_attempt_at == period.end


# --- the engine during a window (in-process steps; the sandbox test covers the worker) ----------


@pytest.fixture
def rollback_rule(db):  # type: ignore[no-untyped-def]
    from agents.registry import register_builtin
    from playbooks.models import Playbook, Rule, Step

    register_builtin("http://127.0.0.1:9/mcp")  # the tools' risks; nothing is called
    Rule.objects.update(enabled=False)
    playbook = Playbook.objects.create(name="roll_back")
    Step.objects.create(playbook=playbook, order=1, name="roll back", kind="tool", tool="rollback_deployment",
                        args={"namespace": "{{ namespace }}", "name": "{{ deployment }}"})
    return Rule.objects.create(name="roll_back_crashes", playbook=playbook, finding_types=["crash_loop"], priority=1000)


@pytest.mark.parametrize("in_maintenance", ["wait", "handoff"])
def test_during_a_window_a_high_step_waits_or_hands_off_as_its_rule_says(  # type: ignore[no-untyped-def]
        in_maintenance, rollback_rule, make_incident, cluster) -> None:
    from agents.models import Approval
    from playbooks.engine import create_run, execute_step
    from playbooks.models import StepRun

    rollback_rule.in_maintenance = in_maintenance
    rollback_rule.save()
    now = timezone.now().astimezone(UTC)
    MaintenanceWindow.objects.create(name="upgrade", cluster=cluster, schedule=f"{now.minute} {now.hour} * * *",
                                     duration_minutes=30)
    held_before = _metric("aiops_steps_held_by_maintenance_total", outcome=in_maintenance)
    incident = make_incident(cluster=cluster, workload_name="cart")
    run = create_run(incident, rollback_rule)
    assert run is not None
    step = StepRun.objects.get(run=run)
    execute_step(step.pk)
    step.refresh_from_db()
    run.refresh_from_db()
    incident.refresh_from_db()
    assert not Approval.objects.exists()
    assert incident.no_run_reason["code"] == "maintenance"
    assert _metric("aiops_steps_held_by_maintenance_total", outcome=in_maintenance) == held_before + 1
    assert ClusterEvent.objects.filter(incident=incident, kind="maintenance").count() == 1
    if in_maintenance == "wait":
        assert (step.state, run.state) == ("queued", "running")
        assert step.not_before is not None and step.not_before > timezone.now()
        assert "waits for its end before asking for an approval" in incident.no_run_reason["text"]
    else:
        assert step.state == "skipped" and step.output.startswith("not requested: maintenance window upgrade")
        assert (run.state, run.outcome) == ("finished", "handed_off")
        assert "hands off during maintenance" in incident.no_run_reason["text"]


def test_rules_keep_what_they_do_in_maintenance_through_yaml(rollback_rule) -> None:  # type: ignore[no-untyped-def]
    import yaml

    from playbooks.yaml_io import ImportFailed, export_yaml, import_yaml

    rollback_rule.in_maintenance = "handoff"
    rollback_rule.save()
    document = yaml.safe_load(export_yaml())
    [rule] = [r for r in document["rules"] if r["name"] == "roll_back_crashes"]
    assert rule["in_maintenance"] == "handoff"
    rule["in_maintenance"] = "sometimes"
    with pytest.raises(ImportFailed, match="in_maintenance: must be wait or handoff"):
        import_yaml(yaml.safe_dump(document), actor="tests", dry_run=True)
