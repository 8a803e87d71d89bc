"""Step conditions (`when:`): refused when saved if they cannot be right, kept by the YAML round
trip, and evaluated by the engine, which records a skipped step with the condition and values."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from playbooks.conditions import ConditionError, check_condition, condition_context, evaluate_condition
from playbooks.models import Playbook, PlaybookRun, Rule, Step
from playbooks.rules import validate_playbook_steps, validate_step

pytestmark = pytest.mark.django_db

DESCRIBE = {"kind": "tool", "tool": "describe_pod", "args": {"namespace": "{{ namespace }}", "name": "{{ pod }}"}}


@pytest.mark.parametrize(
    ("when", "problem"),
    [
        ('rca.failure_class == "app_crash" &&', "syntax error"),
        ("rca.failure_class = 'x'", "syntax error"),
        ('failure_class == "app_crash"', "unknown name 'failure_class'"),
        ('rca.failure_clas == "app_crash"', "rca has no field 'failure_clas'"),
        ('incident.sevrity == "critical"', "incident has no field 'sevrity'"),
        ("steps.restart.ok", "no earlier step named 'restart'"),
        ('rca.confidence > "high"', "'>' cannot order double and string"),
        ("rca.failure_class == 3", "'==' compares string with int"),
        ("!pod_count", "'!' needs a boolean, not int"),
        ("pod_count + 1", "gives int, not true or false"),
        ("kind.startsWith(1)", ".startsWith() compares a string with a string"),
        ('system("rm -rf /")', "unknown function system()"),
    ],
)
def test_a_bad_condition_is_refused_naming_the_step(when: str, problem: str) -> None:
    errors = validate_step(kind="tool", tool="describe_pod", args=DESCRIBE["args"], when=when, name="look",
                           earlier_steps=["describe pod"])
    assert problem in " ".join(errors["when"])
    assert errors["when"][0].startswith("step 'look': ")


@pytest.mark.parametrize(
    "when",
    [
        'rca.failure_class in ["app_crash", "unknown", ""] && pod_count <= 1',
        'steps["describe pod"].ok && rca.confidence >= 0.5',
        "has(evidence.memory_limit) && evidence.restart_count > 3",
        'kind in ["StatefulSet", "DaemonSet"] || incident.severity == "critical"',
        'pods.exists(p, p.startsWith("web-"))',
        "size(pods) > 1 ? workload.kind != \"Node\" : false",
    ],
)
def test_good_conditions_pass(when: str) -> None:
    check_condition(when, ["describe pod"])


def test_a_playbook_checks_step_names_in_order() -> None:
    errors = validate_playbook_steps([("a", "steps.b.ok"), ("b", ""), ("c", "steps.a.ok && steps.b.ok")])
    assert list(errors) == [0] and "no earlier step named 'b'" in errors[0] and errors[0].startswith("step 'a'")


def test_evaluation_reads_the_diagnosis_evidence_and_earlier_steps() -> None:
    context = condition_context(
        {"pods": ["a", "b"], "kind": "Deployment", "rca": {"failure_class": "dependency_failure", "confidence": 0.85},
         "evidence": {"crash_loop": {"restart_count": 7}}, "incident": {"primary_type": "crash_loop"}},
        {"root cause": {"ok": True, "state": "succeeded", "skipped": False, "output": "", "data": {}}},
    )
    assert evaluate_condition('rca.failure_class == "dependency_failure" && pod_count == 2', context)
    assert evaluate_condition('steps["root cause"].ok && evidence.restart_count > 5', context)
    assert not evaluate_condition('rca.failure_class in ["app_crash", "unknown"]', context)
    with pytest.raises(ConditionError, match="no value for 'memory_limit'"):
        evaluate_condition('evidence.memory_limit == "1Gi"', context)


def test_the_admin_refuses_a_condition_naming_a_later_step(client) -> None:  # type: ignore[no-untyped-def]
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    form = {
        "name": "conditional", "description": "", "enabled": "on",
        "steps-TOTAL_FORMS": "2", "steps-INITIAL_FORMS": "0", "steps-MIN_NUM_FORMS": "0", "steps-MAX_NUM_FORMS": "1000",
        "steps-0-order": "1", "steps-0-name": "look", "steps-0-kind": "tool", "steps-0-tool": "describe_pod",
        "steps-0-args": '{"namespace": "{{ namespace }}", "name": "{{ pod }}"}', "steps-0-when": "steps.later.ok",
        "steps-0-on_failure": "continue", "steps-0-timeout_seconds": "60",
        "steps-1-order": "2", "steps-1-name": "later", "steps-1-kind": "notify", "steps-1-tool": "",
        "steps-1-args": '{"text": "hi"}', "steps-1-when": "rca.confidence > 'x'",
        "steps-1-on_failure": "continue", "steps-1-timeout_seconds": "60",
    }
    response = client.post("/admin/playbooks/playbook/add/", form)
    assert response.status_code == 200
    body = response.content.decode()
    assert "step &#x27;look&#x27;: when: no earlier step named &#x27;later&#x27;" in body
    assert "cannot order double and string" in body
    assert not Playbook.objects.filter(name="conditional").exists()

    form["steps-0-when"] = 'rca.failure_class != "dependency_failure"'
    form["steps-1-when"] = "steps.look.ok"
    response = client.post("/admin/playbooks/playbook/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert list(Step.objects.filter(playbook__name="conditional").values_list("when", flat=True)) == [
        'rca.failure_class != "dependency_failure"', "steps.look.ok"]


CONDITIONAL = """\
playbooks:
- name: conditional
  steps:
  - name: look
    kind: tool
    tool: describe_pod
    args: {namespace: '{{ namespace }}', name: '{{ pod }}'}
    when: rca.failure_class in ["app_crash", "unknown"]
  - name: tell
    kind: notify
    args: {text: hi}
    when: steps.look.ok && pod_count > 1
"""


def test_yaml_keeps_conditions_and_refuses_bad_ones_naming_the_step(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONDITIONAL)
    call_command("playbooks", "import", str(path), stdout=StringIO())
    out = StringIO()
    call_command("playbooks", "export", stdout=out)
    assert 'when: rca.failure_class in ["app_crash", "unknown"]' in out.getvalue()
    assert "when: steps.look.ok && pod_count > 1" in out.getvalue()
    Playbook.objects.filter(name="conditional").delete()
    path.write_text(out.getvalue())
    again = StringIO()
    call_command("playbooks", "import", str(path), stdout=again)
    assert list(Step.objects.filter(playbook__name="conditional").order_by("order").values_list("when", flat=True)) == [
        'rca.failure_class in ["app_crash", "unknown"]', "steps.look.ok && pod_count > 1"]

    path.write_text(CONDITIONAL.replace("steps.look.ok", "steps.tell.ok").replace('"unknown"]', "1.5] && rca.x"))
    err = StringIO()
    with pytest.raises(CommandError, match="2 problem"):
        call_command("playbooks", "import", str(path), stdout=StringIO(), stderr=err)
    message = err.getvalue()
    assert "playbook 'conditional'.steps[0].when: step 'look': rca has no field 'x'" in message
    assert "playbook 'conditional'.steps[1].when: step 'tell': no earlier step named 'tell'" in message


def test_a_false_condition_skips_the_step_with_the_condition_and_values(make_incident, sandbox_cluster) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import REGISTRY

    from playbooks.engine import create_run, execute_step

    def skipped(result: str) -> float:
        return REGISTRY.get_sample_value("aiops_playbook_step_conditions_skipped_total", {"result": result}) or 0.0

    before_false, before_error = skipped("false"), skipped("error")
    playbook = Playbook.objects.create(name="conditional")
    for order, (name, when) in enumerate([
        ("first", 'rca.failure_class == "app_crash"'),
        ("second", "steps.first.skipped && pod_count == 2"),
        ("third", 'evidence.memory_limit == "1Gi"'),
    ], start=1):
        Step.objects.create(playbook=playbook, order=order, name=name, kind="notify", args={"text": name}, when=when)
    rule = Rule.objects.create(name="conditional", playbook=playbook, finding_types=["crash_loop"])
    incident = make_incident(cluster=sandbox_cluster, affected_pods=["web-1", "web-2"],
                             rca_report={"failure_class": "dependency_failure", "confidence": 0.8})
    run = create_run(incident, rule, start=False)
    PlaybookRun.objects.filter(pk=run.pk).update(state="running")
    for step in run.steps.order_by("order"):
        type(step).objects.filter(pk=step.pk).update(state="queued")
        execute_step(step.pk)
    states: dict[str, Any] = {s.name: s for s in run.steps.all()}
    first, second, third = states["first"], states["second"], states["third"]
    assert first.state == "skipped"
    assert first.output == 'skipped: `rca.failure_class == "app_crash"` is false (rca.failure_class = "dependency_failure")'
    assert first.data == {"condition": 'rca.failure_class == "app_crash"',
                          "values": {"rca.failure_class": "dependency_failure"}}
    assert second.state == "succeeded" and second.output == "second"
    assert third.state == "skipped" and "could not be evaluated (the incident has no value for 'memory_limit')" in third.output
    assert skipped("false") == before_false + 1 and skipped("error") == before_error + 1



def test_every_seed_playbook_is_valid_and_no_action_contradicts_its_diagnosis(seed_playbooks) -> None:  # type: ignore[no-untyped-def]
    from playbooks.conditions import condition_context, evaluate_condition

    for playbook in Playbook.objects.prefetch_related("steps"):
        steps = list(playbook.steps.order_by("order"))
        for step in steps:
            assert validate_step(kind=step.kind, tool=step.tool, args=step.args, when=step.when, name=step.name) == {}
        assert validate_playbook_steps([(s.name, s.when) for s in steps]) == {}
        # After an RCA step, every mutating step runs only for a diagnosis it fixes, and a
        # hand-off covers every other one.
        if not any(s.kind == "rca" for s in steps):
            continue
        acting = [s for s in steps if s.kind == "tool" and s.tool in (
            "restart_pod", "restart_workload", "patch_memory_limit", "rollback_deployment", "drain_node")]
        for failure_class in ("app_crash", "dependency_failure", "config_error", "permission_error",
                              "image_pull_error", "oom_killed", "unknown"):
            context = condition_context(
                {"pods": ["a"], "kind": "Deployment", "evidence": {"memory_limit": "256Mi"},
                 "rca": {"failure_class": failure_class, "confidence": 0.8}, "incident": {}}, {})
            acts = [s.name for s in acting if not s.when or evaluate_condition(s.when, context)]
            hands_off = [s.name for s in steps if s.kind == "handoff" and (not s.when or evaluate_condition(s.when, context))]
            assert bool(acts) != bool(hands_off) or not acting, (playbook.name, failure_class, acts, hands_off)
            if playbook.name == "crash_loop_remediation":
                assert bool(acts) == (failure_class in ("app_crash", "unknown")), (failure_class, acts)
            if playbook.name == "oom_kill_remediation":
                assert bool(acts) == (failure_class in ("oom_killed", "unknown")), (failure_class, acts)
