"""Rules and playbooks through the API: one validator with the YAML import and the admin (the
same bad input refused at each door, naming the field), audited changes, YAML export/import."""

from __future__ import annotations

import pytest
import yaml

from agents.models import AuditEntry
from playbooks.models import Playbook, Rule
from playbooks.yaml_io import ImportFailed, import_yaml

pytestmark = pytest.mark.django_db

PLAYBOOK = {"name": "restart_web", "description": "restart it", "steps": [
    {"name": "look", "kind": "rca"},
    {"name": "tell", "kind": "notify", "args": {"text": "restarting {{ workload.name }}"}, "when": "rca.confidence > 0.5"},
]}
RULE = {"name": "web_crashes", "finding_types": ["crash_loop"], "playbook": "restart_web", "priority": 200}


def test_a_playbook_and_a_rule_are_created_read_changed_and_deleted(people, api_as) -> None:  # type: ignore[no-untyped-def]
    api = api_as(people.root, "write")
    created = api.post("/api/v1/playbooks/", PLAYBOOK, format="json")
    assert created.status_code == 201, created.json()
    assert [s["name"] for s in created.json()["steps"]] == ["look", "tell"]
    assert api.post("/api/v1/playbooks/", PLAYBOOK, format="json").status_code == 409
    rule = api.post("/api/v1/rules/", RULE, format="json")
    assert rule.status_code == 201 and rule.json()["min_severity"] == "info" and rule.json()["cooldown_seconds"] == 600
    assert api_as(people.carol, "read").get("/api/v1/rules/web_crashes/").json() == rule.json()

    patched = api.patch("/api/v1/rules/web_crashes/", {"priority": 50, "auto_run": False}, format="json")
    assert patched.status_code == 200 and (patched.json()["priority"], patched.json()["auto_run"]) == (50, False)
    assert patched.json()["finding_types"] == ["crash_loop"]  # untouched fields stay
    change = AuditEntry.objects.filter(action="config_change", outcome="updated").latest("id")
    assert change.arguments["changed"] == ["auto_run", "priority"] and "via api" in change.reason
    assert change.actor.startswith("api (token ") and change.actor.endswith(":root")

    in_use = api.delete("/api/v1/playbooks/restart_web/")
    assert in_use.status_code == 409 and "web_crashes" in in_use.json()["detail"]
    assert api.delete("/api/v1/rules/web_crashes/").status_code == 204
    assert api.delete("/api/v1/playbooks/restart_web/").status_code == 204
    assert not Rule.objects.filter(name="web_crashes").exists() and not Playbook.objects.filter(name="restart_web").exists()
    assert AuditEntry.objects.filter(action="config_change", outcome="deleted").count() == 2
    assert api.get("/api/v1/rules/web_crashes/").status_code == 404


def test_the_same_bad_input_is_refused_by_the_api_the_yaml_import_and_the_admin(people, api_as, client) -> None:  # type: ignore[no-untyped-def]
    bad_step = {"name": "bad", "steps": [{"name": "x", "kind": "tool", "tool": "no_such_tool"},
                                         {"name": "y", "kind": "notify", "args": {}, "when": "steps.z.ok"}]}
    api = api_as(people.root, "write")
    refused = api.post("/api/v1/playbooks/", bad_step, format="json")
    assert refused.status_code == 400
    fields = {e["field"]: e["message"] for e in refused.json()["errors"]}
    assert "unknown tool 'no_such_tool'" in fields["steps[0].tool"]
    assert 'a notify step needs {"text": "..."}' in fields["steps[1].args"]
    assert "'z'" in fields["steps[1].when"]
    with pytest.raises(ImportFailed) as failed:
        import_yaml(yaml.safe_dump({"playbooks": [bad_step]}), actor="test")
    for message in fields.values():
        assert any(message in line for line in failed.value.errors)

    bad_rule = {**RULE, "name": "bad_rule", "finding_types": ["crash_lop"], "label_selector": "app in (", "playbook": "none"}
    refused = api.post("/api/v1/rules/", bad_rule, format="json")
    fields = {e["field"]: e["message"] for e in refused.json()["errors"]}
    assert "unknown finding type 'crash_lop'" in fields["finding_types"]
    assert "label_selector" in fields and "no playbook named 'none'" in fields["playbook"]
    # The admin's form runs the same rule check (validate_rule) on the same values.
    client.force_login(people.root)
    Playbook.objects.create(name="some_playbook")
    page = client.post("/admin/playbooks/rule/add/", {
        "name": "bad_rule", "priority": 100, "playbook": Playbook.objects.get(name="some_playbook").pk,
        "finding_types": ["crash_loop"], "label_selector": "app in (", "evidence": "{}", "min_severity": "info",
        "cooldown_seconds": 600, "escalate_after": 2, "escalation_window_seconds": 21600}).content.decode()
    assert api.post("/api/v1/rules/", {**bad_rule, "finding_types": ["crash_loop"], "playbook": "some_playbook"},
                    format="json").json()["errors"][0]["message"] in page.replace("&#x27;", "'")
    assert not Rule.objects.filter(name="bad_rule").exists()


def test_rules_and_playbooks_need_the_write_scope_and_the_admins_permissions(people, api_as) -> None:  # type: ignore[no-untyped-def]
    assert api_as(people.root, "read", "decide").post("/api/v1/playbooks/", PLAYBOOK, format="json").status_code == 403
    refused = api_as(people.alice, "write").post("/api/v1/playbooks/", PLAYBOOK, format="json")
    assert refused.status_code == 403 and "playbooks.add_playbook" in refused.json()["detail"]
    from django.contrib.auth.models import Permission

    people.alice.user_permissions.add(Permission.objects.get(codename="add_playbook"))
    assert api_as(people.alice, "write").post("/api/v1/playbooks/", PLAYBOOK, format="json").status_code == 201


def test_yaml_export_and_import_round_trip_with_line_numbered_errors(people, api_as) -> None:  # type: ignore[no-untyped-def]
    api = api_as(people.root, "write")
    text = yaml.safe_dump({"playbooks": [PLAYBOOK], "rules": [RULE]}, sort_keys=False)
    dry = api.post("/api/v1/config/import/?dry_run=true", text, content_type="application/yaml")
    assert dry.status_code == 200 and dry.json()["created"] == ["playbook restart_web", "rule web_crashes"]
    assert not Playbook.objects.filter(name="restart_web").exists()
    done = api.post("/api/v1/config/import/", text, content_type="application/yaml")
    assert done.status_code == 200 and done.json()["dry_run"] is False
    exported = api.get("/api/v1/config/export/")
    assert exported.status_code == 200 and exported["Content-Type"].startswith("application/yaml")
    document = yaml.safe_load(exported.content)
    assert "restart_web" in [p["name"] for p in document["playbooks"]]
    assert api.post("/api/v1/config/import/", exported.content, content_type="application/yaml").json()["unchanged"]

    broken = text.replace("priority: 200", "priority: high")
    refused = api.post("/api/v1/config/import/", broken, content_type="application/yaml")
    assert refused.status_code == 400 and refused["Content-Type"] == "application/problem+json"
    [error] = refused.json()["errors"]
    assert error["line"] == broken.splitlines().index("  priority: high") + 1 and "must be an integer" in error["message"]
    syntax = api.post("/api/v1/config/import/", "playbooks: [", content_type="application/yaml")
    assert syntax.status_code == 400 and "YAML syntax error" in syntax.json()["errors"][0]["message"]
    assert api.post("/api/v1/config/import/", text, format="json").status_code == 415
    assert api.post("/api/v1/config/import/?prune=maybe", text, content_type="application/yaml").json()[
        "errors"][0]["field"] == "prune"
