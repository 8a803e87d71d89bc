"""`manage.py playbooks export` / `import FILE`: round trip, all or nothing, line-numbered errors."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from agents.models import AuditEntry
from playbooks.models import Playbook, Rule
from playbooks.yaml_io import ImportFailed, export_yaml, import_yaml

pytestmark = pytest.mark.django_db


def _export() -> str:
    out = StringIO()
    call_command("playbooks", "export", stdout=out)
    return out.getvalue()


def test_export_then_import_into_an_empty_database_round_trips(seed_playbooks, tmp_path: Path) -> None:
    exported = _export()
    assert "deployment_rollback" in exported and "bad_rollout: true" in exported
    path = tmp_path / "playbooks.yaml"
    path.write_text(exported)
    Rule.objects.all().delete()
    Playbook.objects.all().delete()

    out = StringIO()
    call_command("playbooks", "import", str(path), stdout=out)
    assert "8 playbook" not in out.getvalue()  # the summary counts objects, see below
    assert "imported: 16 created, 0 updated, 0 deleted, 0 unchanged" in out.getvalue()
    assert _export() == exported
    assert AuditEntry.objects.filter(action="config_change", actor__startswith="cli:").count() == 16

    again = StringIO()
    call_command("playbooks", "import", str(path), stdout=again)
    assert "0 created, 0 updated, 0 deleted, 16 unchanged" in again.getvalue()


def test_an_import_changes_steps_and_rules_by_name(seed_playbooks, tmp_path: Path) -> None:
    exported = _export()
    describe_node = "    tool: describe_node\n    args:\n      name: '{{ node }}'\n"
    assert describe_node in exported
    text = exported.replace("priority: 200", "priority: 250").replace(describe_node, "    tool: list_nodes\n    args: {}\n")
    path = tmp_path / "edit.yaml"
    path.write_text(text)
    out = StringIO()
    call_command("playbooks", "import", str(path), stdout=out)
    assert "updated: playbook node_not_ready_remediation" in out.getvalue()
    assert "updated: rule bad_rollout" in out.getvalue()
    assert Rule.objects.get(name="bad_rollout").priority == 250
    assert Playbook.objects.get(name="node_not_ready_remediation").steps.get(order=1).tool == "list_nodes"


BAD = """\
playbooks:
- name: fine
  steps:
  - name: look
    kind: tool
    tool: describe_pod
    args: {namespace: '{{ namespace }}', name: '{{ pod }}'}
- name: broken
  steps:
  - name: zap
    kind: tool
    tool: zap_everything
  - name: typo
    kind: tool
    tool: describe_pod
    args: {namespace: '{{ incident.namespce }}', name: '{{ pod }}'}
    on_failure: explode
rules:
- name: r1
  finding_types: [crash_loop, crashloop]
  namespace_regex: 'prod-('
  playbook: missing_playbook
  colour: blue
"""


def test_a_bad_file_names_every_problem_with_its_line_and_writes_nothing(tmp_path: Path) -> None:
    before = export_yaml()
    audits = AuditEntry.objects.count()
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    err = StringIO()
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("playbooks", "import", str(path), stderr=err)
    lines = err.getvalue()
    assert f"{path}: line 12: playbook 'broken'.steps[0].tool: unknown tool 'zap_everything'" in lines
    assert "line 16: playbook 'broken'.steps[1].args: args: {{incident.namespce}}: the incident has no field 'namespce'" in lines
    assert "line 17: playbook 'broken'.steps[1].on_failure: 'explode' is not one of stop, continue" in lines
    assert "line 20: rule 'r1'.finding_types: unknown finding type 'crashloop'" in lines
    assert "line 21: rule 'r1'.namespace_regex: regex 'prod-(' does not compile" in lines
    assert "line 22: rule 'r1'.playbook: no playbook named 'missing_playbook'" in lines
    assert "line 23: rule 'r1': unknown key 'colour'" in lines
    # The valid playbook in the same file was not written either.
    assert not Playbook.objects.filter(name="fine").exists()
    assert export_yaml() == before
    assert AuditEntry.objects.count() == audits


def test_a_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "syntax.yaml"
    path.write_text("playbooks:\n- name: x\n  steps: [\n    {name: a\n")
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("playbooks", "import", str(path), stderr=err)
    assert "YAML syntax error" in err.getvalue() and "line 5" in err.getvalue()


def test_check_reports_changes_without_writing(seed_playbooks, tmp_path: Path) -> None:
    path = tmp_path / "check.yaml"
    path.write_text(_export().replace("priority: 90", "priority: 95"))
    out = StringIO()
    call_command("playbooks", "import", str(path), "--check", stdout=out)
    assert "would be updated: rule probe_failure" in out.getvalue()
    assert Rule.objects.get(name="probe_failure").priority == 90


@pytest.mark.django_db
def test_values_of_the_wrong_type_are_reported_not_crashed_on() -> None:
    """Found by fuzzing the REST API (which validates through this import): a list where a name
    or a pattern belongs was hashed or compiled, a 500 instead of a report."""
    text = yaml.safe_dump({"rules": [{
        "name": "odd", "playbook": ["x"], "finding_types": ["crash_loop"], "label_selector": [None],
        "namespace_regex": {"a": 1}, "clusters": [{}], "approver_group": [], "approvers": [{}],
    }]})
    with pytest.raises(ImportFailed) as failed:
        import_yaml(text, actor="test")
    report = "\n".join(failed.value.errors)
    for key in ("playbook", "label_selector", "namespace_regex", "clusters", "approver_group", "approvers"):
        assert f"rule 'odd'.{key}" in report, report
