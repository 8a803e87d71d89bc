"""Rules and playbooks: validation at save time (admin forms), matching, templates, the audit log."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model

from agents.models import AuditEntry
from playbooks.engine import start_run_for_incident
from playbooks.models import Playbook, PlaybookRun, Rule, Step, StepRun
from playbooks.rules import best_rule
from playbooks.signals import incident_opened
from playbooks.templates_render import TemplateError, render_args

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(client):  # type: ignore[no-untyped-def]
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def _playbook_form(name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name, "description": "", "enabled": "on",
        "steps-TOTAL_FORMS": str(len(steps)), "steps-INITIAL_FORMS": "0",
        "steps-MIN_NUM_FORMS": "0", "steps-MAX_NUM_FORMS": "1000",
    }
    for index, step in enumerate(steps):
        for key, value in step.items():
            data[f"steps-{index}-{key}"] = value
    return data


def _step(**overrides: Any) -> dict[str, Any]:
    step = {"order": "1", "name": "describe", "kind": "tool", "tool": "describe_pod",
            "args": '{"namespace": "{{ namespace }}", "name": "{{ pod }}"}', "on_failure": "stop",
            "timeout_seconds": "180"}
    step.update(overrides)
    return step


def test_it_refuses_an_unknown_tool_naming_it(admin_client_) -> None:  # type: ignore[no-untyped-def]
    response = admin_client_.post("/admin/playbooks/playbook/add/", _playbook_form("mine", [_step(tool="nuke_cluster")]))
    assert response.status_code == 200
    assert "unknown tool &#x27;nuke_cluster&#x27;" in response.content.decode()
    assert not Playbook.objects.filter(name="mine").exists()


def test_it_refuses_a_template_field_the_incident_does_not_have(admin_client_) -> None:  # type: ignore[no-untyped-def]
    step = _step(args='{"namespace": "{{ incident.namespaces }}", "name": "{{ pood }}"}')
    response = admin_client_.post("/admin/playbooks/playbook/add/", _playbook_form("mine", [step]))
    body = response.content.decode()
    assert "the incident has no field &#x27;namespaces&#x27;" in body
    assert "references &#x27;pood&#x27;, which the incident does not have" in body
    assert not Playbook.objects.filter(name="mine").exists()


def test_it_refuses_arguments_the_tool_does_not_take(admin_client_) -> None:  # type: ignore[no-untyped-def]
    step = _step(args='{"namespace": "{{ namespace }}", "name": "{{ pod }}", "force": true}')
    response = admin_client_.post("/admin/playbooks/playbook/add/", _playbook_form("mine", [step]))
    assert "takes no argument &#x27;force&#x27;" in response.content.decode()


def test_a_valid_playbook_is_saved_and_audited(admin_client_) -> None:  # type: ignore[no-untyped-def]
    response = admin_client_.post("/admin/playbooks/playbook/add/", _playbook_form("mine", [_step()]))
    assert response.status_code == 302, response.content.decode()[:3000]
    playbook = Playbook.objects.get(name="mine")
    assert list(playbook.steps.values_list("tool", flat=True)) == ["describe_pod"]
    entry = AuditEntry.objects.get(action="config_change")
    assert entry.actor == "admin:root"
    assert entry.outcome == "created"
    assert entry.arguments["after"]["steps"][0]["tool"] == "describe_pod"


def test_it_refuses_a_regex_that_does_not_compile_and_audits_rule_changes(admin_client_) -> None:  # type: ignore[no-untyped-def]
    playbook = Playbook.objects.create(name="pb")
    Step.objects.create(playbook=playbook, order=1, name="v", kind="verify", args={})
    data = {"name": "r1", "priority": "100", "playbook": str(playbook.pk), "auto_run": "on", "enabled": "on",
            "finding_types": ["crash_loop"], "alert_names": "", "evidence": "{}", "namespace_regex": "prod-(",
            "label_selector": "", "min_severity": "info", "cooldown_seconds": "600",
            "escalate_after": "2", "escalation_window_seconds": "21600"}
    response = admin_client_.post("/admin/playbooks/rule/add/", data)
    assert "regex &#x27;prod-(&#x27; does not compile" in response.content.decode()
    assert not Rule.objects.filter(name="r1").exists()

    data["namespace_regex"] = "prod-.*"
    assert admin_client_.post("/admin/playbooks/rule/add/", data).status_code == 302
    rule = Rule.objects.get(name="r1")
    data["priority"] = "300"
    assert admin_client_.post(f"/admin/playbooks/rule/{rule.pk}/change/", data).status_code == 302
    entries = list(AuditEntry.objects.filter(action="config_change").order_by("id"))
    assert [e.outcome for e in entries] == ["created", "updated"]
    assert entries[1].arguments["changed"] == ["priority"]
    assert (entries[1].arguments["before"]["priority"], entries[1].arguments["after"]["priority"]) == (100, 300)


def test_the_admin_lists_rules_playbooks_and_runs(admin_client_, seed_playbooks, make_incident) -> None:  # type: ignore[no-untyped-def]
    from k8s.models import Cluster

    cluster = Cluster.objects.create(name="c1", kubeconfig_path="/nowhere")
    start_run_for_incident(make_incident(cluster=cluster))
    for url in ("/admin/playbooks/rule/?q=crash", "/admin/playbooks/playbook/?enabled__exact=1",
                "/admin/playbooks/playbookrun/?state__exact=running"):
        response = admin_client_.get(url)
        assert response.status_code == 200, url
    run = PlaybookRun.objects.get()
    page = admin_client_.get(f"/admin/playbooks/playbookrun/{run.pk}/change/").content.decode()
    assert "crash_loop_remediation" in page and "restart pod" in page


def test_a_bad_rollout_outranks_the_crash_loop_rule(seed_playbooks, make_incident) -> None:  # type: ignore[no-untyped-def]
    bad_rollout = make_incident(
        finding_types=["crash_loop", "replication_failure"],
        evidence={"crash_loop": {"container": "app"}, "replication_failure": {"bad_rollout": True}},
    )
    assert best_rule(bad_rollout)[0].playbook.name == "deployment_rollback"
    capacity = make_incident(
        workload_name="api", finding_types=["crash_loop", "replication_failure"],
        evidence={"replication_failure": {"bad_rollout": False}},
    )
    assert best_rule(capacity)[0].playbook.name == "crash_loop_remediation"
    oom = make_incident(workload_name="cache", primary_type="oom_killed", finding_types=["oom_killed", "crash_loop"])
    assert best_rule(oom)[0].playbook.name == "oom_kill_remediation"


def test_rule_filters_namespace_severity_labels_and_clusters(no_playbooks, make_incident) -> None:  # type: ignore[no-untyped-def]
    from k8s.models import Cluster

    prod = Cluster.objects.create(name="prod", kubeconfig_path="/x")
    playbook = Playbook.objects.create(name="pb")
    Step.objects.create(playbook=playbook, order=1, name="v", kind="verify", args={})
    rule = Rule.objects.create(name="r", playbook=playbook, finding_types=["crash_loop"], namespace_regex="shop|pay",
                               min_severity="critical", label_selector="tier in (web,api),!canary")
    rule.clusters.set([prod])
    labels = {"crash_loop": {"labels": {"tier": "web"}}}
    assert best_rule(make_incident(cluster=prod, evidence=labels))[0] == rule
    assert best_rule(make_incident(cluster=prod, evidence=labels, workload_name="a", namespace="shopx"))[0] is None
    assert best_rule(make_incident(cluster=prod, evidence=labels, workload_name="b", severity="warning"))[0] is None
    canary = {"crash_loop": {"labels": {"tier": "web", "canary": "yes"}}}
    assert best_rule(make_incident(cluster=prod, evidence=canary, workload_name="c"))[0] is None
    other = Cluster.objects.create(name="dev", kubeconfig_path="/x")
    assert best_rule(make_incident(cluster=other, evidence=labels, workload_name="d"))[0] is None


def test_an_incident_gets_one_run_with_its_steps_and_a_cooldown_blocks_the_next(
    seed_playbooks, make_incident, django_capture_on_commit_callbacks  # type: ignore[no-untyped-def]
) -> None:
    from k8s.models import Cluster

    cluster = Cluster.objects.create(name="c1", kubeconfig_path="/nowhere")
    incident = make_incident(cluster=cluster)
    with django_capture_on_commit_callbacks() as callbacks:
        incident_opened.send(sender=type(incident), incident=incident)
        incident_opened.send(sender=type(incident), incident=incident)  # a duplicate signal
    run = PlaybookRun.objects.get()
    assert (run.playbook_name, run.state, run.rule.name) == ("crash_loop_remediation", "running", "crash_loop")
    states = list(run.steps.order_by("order").values_list("name", "state"))
    assert states[0] == ("describe pod", "queued") and all(state == "pending" for _, state in states[1:])
    assert len(callbacks) == 1  # one message: the first step

    incident.state, incident.resolved_at = "resolved", incident.opened_at
    incident.save()
    again = make_incident(cluster=cluster)  # same workload, inside the rule's cooldown
    assert start_run_for_incident(again) is None
    assert PlaybookRun.objects.count() == 1


def test_templates_render_from_the_incident_and_name_what_is_missing(make_incident) -> None:  # type: ignore[no-untyped-def]
    incident = make_incident(
        primary_type="oom_killed",
        evidence={"oom_killed": {"container": "app", "memory_limit": "256Mi"}},
        affected_pods=["web-1", "web-2"],
    )
    args = {"namespace": "{{ namespace }}", "pod": "{{ pod }}", "container": "{{ container }}",
            "memory": "{{ evidence.memory_limit|scale_quantity:2 }}", "all": "{{ pods|join:\",\" }}",
            "text": "{{ kind }} {{ namespace }}/{{ name }} has {{ incident.primary_type }}"}
    assert render_args(args, incident) == {
        "namespace": "shop", "pod": "web-1", "container": "app", "memory": "512Mi", "all": "web-1,web-2",
        "text": "Deployment shop/web has oom_killed",
    }
    with pytest.raises(TemplateError, match="names no node"):
        render_args({"name": "{{ node }}"}, incident)
    assert render_args({"name": '{{ node|default:"none" }}'}, incident) == {"name": "none"}


def test_a_step_run_keeps_its_snapshot_when_the_playbook_changes(seed_playbooks, make_incident) -> None:  # type: ignore[no-untyped-def]
    from k8s.models import Cluster

    cluster = Cluster.objects.create(name="c1", kubeconfig_path="/nowhere")
    run = start_run_for_incident(make_incident(cluster=cluster))
    Step.objects.filter(playbook__name="crash_loop_remediation", name="restart pod").update(tool="restart_deployment")
    assert StepRun.objects.get(run=run, name="restart pod").tool == "restart_pod"


def test_a_rule_without_auto_run_proposes_the_run_and_the_admin_starts_it(
    admin_client_, seed_playbooks, make_incident, django_capture_on_commit_callbacks  # type: ignore[no-untyped-def]
) -> None:
    from k8s.models import Cluster

    Rule.objects.filter(name="crash_loop").update(auto_run=False)
    cluster = Cluster.objects.create(name="c1", kubeconfig_path="/nowhere")
    with django_capture_on_commit_callbacks() as callbacks:
        run = start_run_for_incident(make_incident(cluster=cluster))
    assert run.state == "proposed" and callbacks == []
    assert set(run.steps.values_list("state", flat=True)) == {"pending"}

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client_.post("/admin/playbooks/playbookrun/", {
            "action": "start_runs", "_selected_action": [str(run.pk)]}, follow=True)
    assert "1 run(s) started." in response.content.decode()
    run.refresh_from_db()
    assert run.state == "running" and run.started_at is not None
    assert run.steps.get(order=1).state == "queued" and len(callbacks) == 1


def test_a_label_selector_matches_the_workloads_a_real_poll_labels(sandbox, sandbox_cluster, no_playbooks) -> None:  # type: ignore[no-untyped-def]
    """The detectors record the workload's labels, so a selector picks workloads on a live cluster."""
    from playbooks.models import Incident
    from playbooks.services.poll import poll

    playbook = Playbook.objects.create(name="pb")
    Step.objects.create(playbook=playbook, order=1, name="v", kind="verify", args={})
    ledger_only = Rule.objects.create(name="ledger only", playbook=playbook, finding_types=["crash_loop", "oom_killed"],
                                      label_selector="app.kubernetes.io/name=ledger")
    zone_b = Rule.objects.create(name="zone b nodes", playbook=playbook, finding_types=["not_ready_node"],
                                 label_selector="topology.kubernetes.io/zone=zone-b")

    assert poll(sandbox_cluster).outcome == "ok"
    incidents = {i.workload_name: i for i in Incident.objects.filter(cluster=sandbox_cluster, state="open")}
    ledger, builder, node = incidents["ledger"], incidents["report-builder"], incidents["node-4"]
    # The pods' labels, less the ReplicaSet's hash (it changes with every rollout).
    assert ledger.evidence["crash_loop"]["labels"] == {"app.kubernetes.io/name": "ledger"}
    assert best_rule(ledger)[0] == ledger_only
    # oom_killed, but app=report-builder: nothing runs, and the closest rule says why.
    assert best_rule(builder) == (
        None, "no rule matched; the closest is rule ledger only: labels do not match 'app.kubernetes.io/name=ledger'")
    assert node.evidence["not_ready_node"]["labels"]["topology.kubernetes.io/zone"] == "zone-b"
    assert best_rule(node)[0] == zone_b

    # An alert's labels count as well: the same selector on an alert-only incident.
    alert = Rule.objects.create(name="alert", playbook=playbook, alert_names=["KubePodCrashLooping"],
                                label_selector="app.kubernetes.io/name=ledger")
    from_alert = Incident.objects.create(
        cluster=sandbox_cluster, source="alertmanager", workload_kind="Pod", namespace="payments", workload_name="ledger-x",
        severity="critical",
        alertname="KubePodCrashLooping", opened_at=ledger.opened_at, last_seen_at=ledger.opened_at,
        evidence={"alert:KubePodCrashLooping": {"labels": {"alertname": "KubePodCrashLooping", "app.kubernetes.io/name": "ledger"}}},
    )
    assert best_rule(from_alert)[0] == alert
    from_alert.evidence["alert:KubePodCrashLooping"]["labels"]["app.kubernetes.io/name"] = "cart"
    assert best_rule(from_alert)[0] is None


def test_a_label_on_the_deployment_alone_selects_its_pods_incident(sandbox, sandbox_cluster, no_playbooks) -> None:  # type: ignore[no-untyped-def]
    """Teams label Deployments, not pod templates: the poll gives pod findings their Deployment's labels."""
    from kubernetes import client as k8s_client

    from playbooks.models import Incident
    from playbooks.services.poll import poll

    apps = k8s_client.AppsV1Api(sandbox.api_client())
    apps.patch_namespaced_deployment("ledger", "payments", {"metadata": {"labels": {"team": "core-payments"}}})
    playbook = Playbook.objects.create(name="pb")
    Step.objects.create(playbook=playbook, order=1, name="v", kind="verify", args={})
    team = Rule.objects.create(name="team", playbook=playbook, finding_types=["crash_loop"], label_selector="team=core-payments")

    assert poll(sandbox_cluster).outcome == "ok"
    ledger = Incident.objects.get(cluster=sandbox_cluster, state="open", workload_name="ledger")
    assert ledger.evidence["crash_loop"]["labels"]["team"] == "core-payments"
    assert best_rule(ledger)[0] == team
