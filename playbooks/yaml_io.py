"""Rules and playbooks as YAML, for GitOps: `manage.py playbooks export` / `import FILE`.

Export writes every playbook (with its steps in order) and every rule, sorted by name, so the
file diffs cleanly. Import validates the whole file first -- YAML syntax, unknown keys, types,
the same checks the admin forms run, references to playbooks, clusters, groups and users --
and reports every problem with its line number; only a file without problems is applied, in
one transaction (all or nothing). Objects are matched by name; a playbook's steps are replaced
by the file's; `prune` also deletes rules and playbooks the file does not name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from playbooks.models import Playbook, Rule, Severity, Step
from playbooks.models.engine import PLAYBOOK_NAME
from playbooks.rules import validate_rule, validate_step

PLAYBOOK_KEYS = {"name", "description", "enabled", "steps"}
STEP_KEYS = {"name", "kind", "tool", "args", "when", "on_failure", "timeout_seconds"}
RULE_KEYS = {
    "name", "description", "enabled", "priority", "finding_types", "alert_names", "evidence", "namespace_regex",
    "label_selector", "min_severity", "clusters", "cooldown_seconds", "playbook", "approver_group", "approvers",
    "auto_run", "escalate_after", "escalation_window_seconds", "in_maintenance",
}


class ImportFailed(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# --- Snapshots (export and the audit log share them) ---------------------------------------


def playbook_snapshot(playbook: Playbook) -> dict[str, Any]:
    return {
        "name": playbook.name,
        "description": playbook.description,
        "enabled": playbook.enabled,
        "steps": [
            {
                "name": step.name,
                "kind": step.kind,
                **({"tool": step.tool} if step.tool else {}),
                "args": step.args,
                **({"when": step.when} if step.when else {}),
                "on_failure": step.on_failure,
                "timeout_seconds": step.timeout_seconds,
            }
            for step in playbook.steps.order_by("order")
        ],
    }


def rule_snapshot(rule: Rule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "description": rule.description,
        "enabled": rule.enabled,
        "priority": rule.priority,
        "finding_types": list(rule.finding_types or []),
        "alert_names": list(rule.alert_names or []),
        "evidence": dict(rule.evidence or {}),
        "namespace_regex": rule.namespace_regex,
        "label_selector": rule.label_selector,
        "min_severity": rule.min_severity,
        "clusters": sorted(cluster.name for cluster in rule.clusters.all()),
        "cooldown_seconds": rule.cooldown_seconds,
        "playbook": rule.playbook.name,
        "approver_group": rule.approver_group.name if rule.approver_group_id else None,
        "approvers": sorted(user.get_username() for user in rule.approvers.all()),
        "auto_run": rule.auto_run,
        "escalate_after": rule.escalate_after,
        "escalation_window_seconds": rule.escalation_window_seconds,
        "in_maintenance": rule.in_maintenance,
    }


def export_yaml() -> str:
    document = {
        "playbooks": [playbook_snapshot(p) for p in Playbook.objects.order_by("name")],
        "rules": [
            rule_snapshot(r)
            for r in Rule.objects.select_related("playbook", "approver_group").prefetch_related("clusters", "approvers")
            .order_by("name")
        ],
    }
    header = "# AIOps rules and playbooks. Apply with: python manage.py playbooks import FILE\n"
    return header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)


# --- Parsing with line numbers ---------------------------------------------------------------


@dataclass
class Located:
    """A parsed value with the line (1-based) of each key and item, for error messages."""

    value: Any
    line: int
    children: dict[Any, Located] = field(default_factory=dict)

    def at(self, key: Any) -> Located:
        return self.children.get(key, self)


def _locate(node: yaml.Node, value: Any) -> Located:
    located = Located(value, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode) and isinstance(value, dict):
        for key_node, value_node in node.value:
            key = key_node.value
            if key in value:
                child = _locate(value_node, value[key])
                child.line = key_node.start_mark.line + 1
                located.children[key] = child
    elif isinstance(node, yaml.SequenceNode) and isinstance(value, list):
        for index, item_node in enumerate(node.value):
            if index < len(value):
                located.children[index] = _locate(item_node, value[index])
    return located


def parse(text: str) -> Located:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ImportFailed(["line 1: the file is empty (expected playbooks: and rules:)"])
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "line ?"
        raise ImportFailed([f"{where}: YAML syntax error: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ImportFailed([f"line ?: YAML error: {exc}"]) from None
    finally:
        loader.dispose()
    return _locate(node, data)


# --- Validation --------------------------------------------------------------------------------


def located(value: Any) -> Located:
    """Data that did not come from a file (the REST API's JSON), for `validate`: no line numbers."""
    node = Located(value, 0)
    if isinstance(value, dict):
        node.children = {key: located(item) for key, item in value.items()}
    elif isinstance(value, list):
        node.children = {index: located(item) for index, item in enumerate(value)}
    return node


class Checker:
    """Collects what `validate` finds: as text with line numbers (the import's report), and as
    (line, where, message) for callers that name the field (the REST API)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.problems: list[tuple[int, str, str]] = []

    def error(self, located: Located, where: str, message: str) -> None:
        self.errors.append(f"line {located.line}: {where}: {message}")
        self.problems.append((located.line, where, message))

    def keys(self, located: Located, where: str, allowed: set[str], required: set[str]) -> bool:
        if not isinstance(located.value, dict):
            self.error(located, where, f"expected a mapping, got {type(located.value).__name__}")
            return False
        for key in located.value:
            if key not in allowed:
                self.error(located.at(key), where, f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required - set(located.value)):
            self.error(located, where, f"missing required key {key!r}")
        return True

    def typed(self, located: Located, where: str, key: str, kinds: tuple[type, ...], label: str) -> Any:
        value = located.value.get(key)
        if key in located.value and (not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))):
            self.error(located.at(key), f"{where}.{key}", f"must be {label}, got {value!r}")
            return None
        return value


def _field_errors(checker: Checker, located: Located, where: str, errors: dict[str, list[str]], key_map: dict[str, str]) -> None:
    for field_name, messages in errors.items():
        key = key_map.get(field_name, field_name)
        for message in messages:
            checker.error(located.at(key), f"{where}.{key}", message)


def _label(kind: str, value: Any, fallback: str) -> str:
    name = value.get("name") if isinstance(value, dict) else None
    return f"{kind} {name!r}" if isinstance(name, str) else fallback


def validate(document: Located, checker: Checker | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """The one validator of rules and playbooks: the YAML import, the admin (its forms run the
    same `validate_rule` / `validate_step`) and the REST API all come through here."""
    checker = checker if checker is not None else Checker()
    if not checker.keys(document, "(top)", {"playbooks", "rules"}, set()):
        return [], [], checker.errors
    playbooks: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    seen_playbooks: set[str] = set()

    raw_playbooks = document.at("playbooks") if "playbooks" in document.value else Located([], document.line)
    if not isinstance(raw_playbooks.value, list):
        checker.error(raw_playbooks, "playbooks", "must be a list")
    else:
        for index, item in enumerate(raw_playbooks.value):
            located = raw_playbooks.at(index)
            where = _label("playbook", located.value, f"playbooks[{index}]")
            if not checker.keys(located, where, PLAYBOOK_KEYS, {"name", "steps"}):
                continue
            name = checker.typed(located, where, "name", (str,), "a string")
            if isinstance(name, str):
                where = f"playbook {name!r}"
                try:
                    PLAYBOOK_NAME(name)
                except Exception:  # noqa: BLE001 - ValidationError; its message is ours
                    checker.error(located.at("name"), where, f"name {name!r}: {PLAYBOOK_NAME.message}")
                if name in seen_playbooks:
                    checker.error(located.at("name"), where, "defined twice in this file")
                seen_playbooks.add(name)
            description = checker.typed(located, where, "description", (str,), "a string") or ""
            enabled = checker.typed(located, where, "enabled", (bool,), "true or false")
            steps_loc = located.at("steps")
            steps: list[dict[str, Any]] = []
            if not isinstance(item.get("steps"), list) or not item.get("steps"):
                checker.error(steps_loc, f"{where}.steps", "must be a non-empty list of steps")
            else:
                for step_index, _step in enumerate(item["steps"]):
                    step_loc = steps_loc.at(step_index)
                    step_where = f"{where}.steps[{step_index}]"
                    if not checker.keys(step_loc, step_where, STEP_KEYS, {"name", "kind"}):
                        continue
                    step_name = checker.typed(step_loc, step_where, "name", (str,), "a string")
                    kind = checker.typed(step_loc, step_where, "kind", (str,), "a string")
                    tool = checker.typed(step_loc, step_where, "tool", (str,), "a string") or ""
                    args = step_loc.value.get("args", {})
                    on_failure = step_loc.value.get("on_failure", Step.OnFailure.STOP)
                    if on_failure not in Step.OnFailure.values:
                        checker.error(step_loc.at("on_failure"), f"{step_where}.on_failure",
                                      f"{on_failure!r} is not one of {', '.join(Step.OnFailure.values)}")
                    timeout = checker.typed(step_loc, step_where, "timeout_seconds", (int,), "an integer")
                    if isinstance(timeout, int) and not 1 <= timeout <= 86400:
                        checker.error(step_loc.at("timeout_seconds"), f"{step_where}.timeout_seconds",
                                      "must be between 1 and 86400")
                    when = checker.typed(step_loc, step_where, "when", (str,), "a CEL condition (a string)") or ""
                    if isinstance(kind, str):
                        _field_errors(checker, step_loc, step_where, validate_step(
                            kind=kind, tool=tool, args=args, when=when if isinstance(when, str) else "",
                            name=step_name if isinstance(step_name, str) else "",
                            earlier_steps=[s["name"] for s in steps],
                        ), {})
                    steps.append({
                        "name": step_name or "", "kind": kind or "", "tool": tool, "args": args if isinstance(args, dict) else {},
                        "when": when if isinstance(when, str) else "",
                        "on_failure": on_failure, "timeout_seconds": timeout if isinstance(timeout, int) else 180,
                    })
            playbooks.append({"name": name, "description": description,
                              "enabled": True if enabled is None else enabled, "steps": steps})

    raw_rules = document.at("rules") if "rules" in document.value else Located([], document.line)
    seen_rules: set[str] = set()
    known_playbooks = seen_playbooks | set(Playbook.objects.values_list("name", flat=True))
    if not isinstance(raw_rules.value, list):
        checker.error(raw_rules, "rules", "must be a list")
    else:
        from k8s.models import Cluster

        clusters = set(Cluster.objects.values_list("name", flat=True))
        groups = set(Group.objects.values_list("name", flat=True))
        for index, _item in enumerate(raw_rules.value):
            located = raw_rules.at(index)
            where = _label("rule", located.value, f"rules[{index}]")
            if not checker.keys(located, where, RULE_KEYS, {"name", "playbook"}):
                continue
            value = located.value
            name = checker.typed(located, where, "name", (str,), "a string")
            if isinstance(name, str):
                where = f"rule {name!r}"
                try:
                    PLAYBOOK_NAME(name)
                except Exception:  # noqa: BLE001
                    checker.error(located.at("name"), where, f"name {name!r}: {PLAYBOOK_NAME.message}")
                if name in seen_rules:
                    checker.error(located.at("name"), where, "defined twice in this file")
                seen_rules.add(name)
            for key, kinds, label in (
                ("description", (str,), "a string"), ("enabled", (bool,), "true or false"),
                ("priority", (int,), "an integer"), ("namespace_regex", (str,), "a string"),
                ("label_selector", (str,), "a string"), ("cooldown_seconds", (int,), "an integer"),
                ("auto_run", (bool,), "true or false"), ("clusters", (list,), "a list of cluster names"),
                ("approvers", (list,), "a list of usernames"), ("evidence", (dict,), "a mapping"),
            ):
                checker.typed(located, where, key, kinds, label)
            for key, low, high in (("escalate_after", 1, 100), ("escalation_window_seconds", 60, 30 * 86400)):
                number = checker.typed(located, where, key, (int,), "an integer")
                if isinstance(number, int) and not low <= number <= high:
                    checker.error(located.at(key), f"{where}.{key}", f"must be between {low} and {high}")
            if value.get("in_maintenance", "wait") not in ("wait", "handoff"):
                checker.error(located.at("in_maintenance"), f"{where}.in_maintenance", "must be wait or handoff")
            if isinstance(value.get("cooldown_seconds"), int) and value["cooldown_seconds"] < 0:
                checker.error(located.at("cooldown_seconds"), f"{where}.cooldown_seconds", "must not be negative")
            severity = value.get("min_severity", Severity.INFO)
            if severity not in Severity.values:
                checker.error(located.at("min_severity"), f"{where}.min_severity",
                              f"{severity!r} is not one of {', '.join(Severity.values)}")
            _field_errors(checker, located, where, validate_rule(
                finding_types=value.get("finding_types", []), alert_names=value.get("alert_names", []),
                evidence=value.get("evidence", {}),
                # A non-string was reported above (typed); the pattern checks take strings only.
                namespace_regex=value["namespace_regex"] if isinstance(value.get("namespace_regex"), str) else "",
                label_selector=value["label_selector"] if isinstance(value.get("label_selector"), str) else "",
            ), {})
            playbook = value.get("playbook")
            # Names are strings: a list or a mapping here is refused, never hashed into a set lookup.
            if not isinstance(playbook, str) or playbook not in known_playbooks:
                checker.error(located.at("playbook"), f"{where}.playbook",
                              f"no playbook named {playbook!r} in this file or the database")
            for cluster in value.get("clusters") or [] if isinstance(value.get("clusters"), list) else []:
                if not isinstance(cluster, str) or cluster not in clusters:
                    checker.error(located.at("clusters"), f"{where}.clusters", f"no cluster named {cluster!r}")
            group = value.get("approver_group")
            if group is not None and (not isinstance(group, str) or group not in groups):
                checker.error(located.at("approver_group"), f"{where}.approver_group", f"no group named {group!r}")
            approvers = value.get("approvers") or []
            if isinstance(approvers, list) and approvers:
                found = set(get_user_model().objects.filter(username__in=[str(a) for a in approvers])
                            .values_list("username", flat=True))
                for username in approvers:
                    if not isinstance(username, str) or username not in found:
                        checker.error(located.at("approvers"), f"{where}.approvers", f"no user named {username!r}")
            rules.append(value)
    return playbooks, rules, checker.errors


# --- Applying ------------------------------------------------------------------------------------


def apply(playbooks: list[dict[str, Any]], rules: list[dict[str, Any]], *, actor: str, via: str) -> dict[str, list[str]]:
    """Write what `validate` returned without errors (in the caller's transaction), audited."""
    changes: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": [], "deleted": []}
    for spec in playbooks:
        _apply_playbook(spec, actor, changes, via=via)
    for spec in rules:
        _apply_rule(spec, actor, changes, via=via)
    return changes


def import_yaml(text: str, *, actor: str, prune: bool = False, dry_run: bool = False) -> dict[str, list[str]]:
    """Validate and apply; raises ImportFailed (nothing written) with every problem found."""
    document = parse(text)
    playbooks, rules, errors = validate(document)
    if errors:
        raise ImportFailed(errors)
    changes: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": [], "deleted": []}
    with transaction.atomic():
        for spec in playbooks:
            _apply_playbook(spec, actor, changes)
        for spec in rules:
            _apply_rule(spec, actor, changes)
        if prune:
            wanted_rules = {spec["name"] for spec in rules}
            for rule in Rule.objects.exclude(name__in=wanted_rules):
                audit_change(actor, "rule", rule.name, "deleted", before=rule_snapshot(rule), after=None, via="yaml import")
                changes["deleted"].append(f"rule {rule.name}")
                rule.delete()
            wanted = {spec["name"] for spec in playbooks}
            for playbook in Playbook.objects.exclude(name__in=wanted):
                if playbook.rules.exists():
                    raise ImportFailed([f"line 1: --prune: playbook {playbook.name!r} is not in the file but "
                                        f"rules still use it: {', '.join(playbook.rules.values_list('name', flat=True))}"])
                audit_change(actor, "playbook", playbook.name, "deleted", before=playbook_snapshot(playbook), after=None,
                             via="yaml import")
                changes["deleted"].append(f"playbook {playbook.name}")
                playbook.delete()
        if dry_run:
            transaction.set_rollback(True)
    return changes


def _apply_playbook(spec: dict[str, Any], actor: str, changes: dict[str, list[str]], *, via: str = "yaml import") -> None:
    playbook = Playbook.objects.filter(name=spec["name"]).first()
    before = playbook_snapshot(playbook) if playbook else None
    if playbook is None:
        playbook = Playbook(name=spec["name"])
    playbook.description = spec["description"]
    playbook.enabled = spec["enabled"]
    playbook.save()
    current = [
        (s.name, s.kind, s.tool, s.args, s.when, s.on_failure, s.timeout_seconds)
        for s in playbook.steps.order_by("order")
    ]
    wanted = [
        (s["name"], s["kind"], s["tool"], s["args"], s["when"], s["on_failure"], s["timeout_seconds"])
        for s in spec["steps"]
    ]
    if current != wanted:
        playbook.steps.all().delete()
        Step.objects.bulk_create(
            Step(playbook=playbook, order=index, name=s["name"], kind=s["kind"], tool=s["tool"], args=s["args"],
                 when=s["when"], on_failure=s["on_failure"], timeout_seconds=s["timeout_seconds"])
            for index, s in enumerate(spec["steps"], start=1)
        )
    after = playbook_snapshot(playbook)
    _note(actor, "playbook", playbook.name, before, after, changes, via=via)


def _apply_rule(spec: dict[str, Any], actor: str, changes: dict[str, list[str]], *, via: str = "yaml import") -> None:
    rule = Rule.objects.filter(name=spec["name"]).first()
    before = rule_snapshot(rule) if rule else None
    if rule is None:
        rule = Rule(name=spec["name"])
    rule.description = spec.get("description", "")
    rule.enabled = spec.get("enabled", True)
    rule.priority = spec.get("priority", 100)
    rule.finding_types = spec.get("finding_types", [])
    rule.alert_names = spec.get("alert_names", [])
    rule.evidence = spec.get("evidence", {})
    rule.namespace_regex = spec.get("namespace_regex", "") or ""
    rule.label_selector = spec.get("label_selector", "") or ""
    rule.min_severity = spec.get("min_severity", Severity.INFO)
    rule.cooldown_seconds = spec.get("cooldown_seconds", 600)
    rule.playbook = Playbook.objects.get(name=spec["playbook"])
    rule.approver_group = Group.objects.get(name=spec["approver_group"]) if spec.get("approver_group") else None
    rule.auto_run = spec.get("auto_run", True)
    rule.escalate_after = spec.get("escalate_after", 2)
    rule.escalation_window_seconds = spec.get("escalation_window_seconds", 6 * 3600)
    rule.in_maintenance = spec.get("in_maintenance", "wait")
    rule.save()
    from k8s.models import Cluster

    rule.clusters.set(Cluster.objects.filter(name__in=spec.get("clusters") or []))
    rule.approvers.set(get_user_model().objects.filter(username__in=spec.get("approvers") or []))
    _note(actor, "rule", rule.name, before, rule_snapshot(rule), changes, via=via)


def _note(actor: str, kind: str, name: str, before: Any, after: Any, changes: dict[str, list[str]], *,
          via: str = "yaml import") -> None:
    if before == after:
        changes["unchanged"].append(f"{kind} {name}")
        return
    outcome = "created" if before is None else "updated"
    changes[outcome].append(f"{kind} {name}")
    audit_change(actor, kind, name, outcome, before=before, after=after, via=via)


def audit_change(actor: str, kind: str, name: str, outcome: str, *, before: Any, after: Any, via: str) -> None:
    """One append-only audit entry per changed rule or playbook (admin and YAML import alike)."""
    from agents.models import AuditEntry

    changed = sorted(
        key for key in set((before or {}).keys()) | set((after or {}).keys())
        if (before or {}).get(key) != (after or {}).get(key)
    )
    AuditEntry.objects.create(
        actor=actor[:200],
        action="config_change",
        arguments={"object": kind, "name": name, "changed": changed, "before": before, "after": after},
        reason=f"{kind} {name} {outcome} via {via}",
        outcome=outcome,
        detail=", ".join(changed)[:2000],
    )
