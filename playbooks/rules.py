"""Which rule an incident gets, and what makes a rule or a step valid.

Matching is a pure function of the incident and the rules (plus one query for cooldowns), so
the receiver that creates runs stays small and the same code explains a match in the admin.
Validation returns messages keyed by field; the models' `clean()`, the admin forms and the YAML
import all use it, so a problem reads the same wherever it is found.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

import structlog
from django.utils import timezone

from playbooks.templates_render import template_errors

log = structlog.get_logger(__name__)

# Finding types, as DESIGN.md names them (detectors, incidents, rules and YAML share them).
FINDING_TYPES = (
    "crash_loop",
    "oom_killed",
    "not_ready_node",
    "replication_failure",
    "image_pull_failure",
    "unschedulable",
    "probe_failure",
    "hpa_maxed",
    "failed_job",
    "evicted",
    "high_restart_rate",
    "cluster_unreachable",
)
STEP_KINDS = ("tool", "rca", "notify", "verify", "handoff")
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
LABEL_TERM = re.compile(
    r"^\s*(?P<key>[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[-A-Za-z0-9_.]*)|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\)|)\s*$"
)
LABEL_NEGATED = re.compile(r"^\s*!(?P<key>[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?)\s*$")


# --- The tool registry ---------------------------------------------------------------------


def tool_specs() -> dict[str, dict[str, Any]]:
    """Our MCP server's tool metadata (importable without starting it)."""
    try:
        from k8s.mcp_server.tools import TOOL_SPECS
    except ImportError:
        return {}
    return dict(TOOL_SPECS)


def known_tools() -> set[str]:
    """Tools a step may name: our server's tools and every tool synced into the registry."""
    names = set(tool_specs())
    try:
        from agents.registry import list_tools

        for tool in list_tools():
            names.add(tool if isinstance(tool, str) else str(getattr(tool, "name", tool)))
    except Exception as exc:  # noqa: BLE001 - the registry's table may not exist yet (first migrate)
        log.warning("tool_registry_unavailable", error=str(exc))
    return names


def tool_schema(tool: str) -> dict[str, Any] | None:
    spec = tool_specs().get(tool)
    if spec is None:
        return None
    schema = spec.get("input_schema") if isinstance(spec, dict) else getattr(spec, "input_schema", None)
    return schema if isinstance(schema, dict) else None


# --- Validation ----------------------------------------------------------------------------


def validate_step(
    *, kind: str, tool: str, args: Any, when: str = "", name: str = "", earlier_steps: list[str] | None = None
) -> dict[str, list[str]]:
    """Problems with one step. `earlier_steps` (names) checks `steps.<name>` in its condition;
    None leaves step names to `validate_playbook_steps`, which sees the whole playbook."""
    errors: dict[str, list[str]] = {}
    if when:
        from playbooks.conditions import ConditionError, check_condition

        try:
            check_condition(when, earlier_steps)
        except ConditionError as exc:
            errors.setdefault("when", []).append(f"step {name!r}: {exc}" if name else str(exc))
    if kind not in STEP_KINDS:
        errors.setdefault("kind", []).append(f"unknown step kind {kind!r} (use one of: {', '.join(STEP_KINDS)})")
        return errors
    if not isinstance(args, dict):
        errors.setdefault("args", []).append(f"arguments must be an object (a mapping), not {type(args).__name__}")
        return errors
    if kind == "tool":
        if not tool:
            errors.setdefault("tool", []).append("a tool step needs a tool")
        elif tool not in known_tools():
            errors.setdefault("tool", []).append(
                f"unknown tool {tool!r} (known: {', '.join(sorted(known_tools())) or 'none registered'})"
            )
        else:
            schema = tool_schema(tool) or {}
            properties = schema.get("properties")
            if isinstance(properties, dict) and properties:
                unknown = sorted(set(args) - set(properties))
                if unknown:
                    errors.setdefault("args", []).append(
                        f"tool {tool!r} takes no argument {', '.join(map(repr, unknown))} "
                        f"(it takes: {', '.join(sorted(properties))})"
                    )
            missing = sorted(set(schema.get("required") or []) - set(args))
            if missing:
                errors.setdefault("args", []).append(
                    f"tool {tool!r} needs argument {', '.join(map(repr, missing))}"
                )
    elif tool:
        errors.setdefault("tool", []).append(f"only tool steps name a tool (this is a {kind} step)")
    if kind in ("notify", "handoff") and not isinstance(args.get("text"), str):
        errors.setdefault("args", []).append(f'a {kind} step needs {{"text": "..."}}')
    if kind in ("notify", "handoff") and args.get("severity", "info") not in SEVERITY_RANK:
        errors.setdefault("args", []).append(f"severity {args.get('severity')!r} is not one of info, warning, critical")
    if kind == "verify":
        for key in ("checks", "interval"):
            value = args.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                errors.setdefault("args", []).append(f"verify {key} must be a non-negative number, not {value!r}")
        unknown = sorted(set(args) - {"checks", "interval"})
        if unknown:
            errors.setdefault("args", []).append(f"verify takes checks and interval, not {', '.join(unknown)}")
    problems = template_errors(args)
    if problems:
        errors.setdefault("args", []).extend(problems)
    return errors


def validate_playbook_steps(steps: list[tuple[str, str]]) -> dict[int, str]:
    """{index: message} for steps (name, when) whose condition names a step that is not earlier.

    The one playbook-level validator: the admin's step formset, the YAML import and the API
    call it with the steps in order.
    """
    from playbooks.conditions import playbook_condition_errors

    return playbook_condition_errors(steps)


def parse_label_selector(selector: str) -> list[tuple[str, str, list[str]]]:
    """`app=web,tier!=db,env in (a,b),!canary` -> [(key, op, values)]; raises ValueError."""
    terms: list[tuple[str, str, list[str]]] = []
    if not selector.strip():
        return terms
    for raw in _split_selector(selector):
        negated = LABEL_NEGATED.fullmatch(raw)
        if negated:
            terms.append((negated.group("key"), "!exists", []))
            continue
        match = LABEL_TERM.fullmatch(raw)
        if not match:
            raise ValueError(f"label selector term {raw.strip()!r} is not key, key=value, key!=value or key in (a,b)")
        key = match.group("key")
        if match.group("op"):
            op = "!=" if match.group("op") == "!=" else "="
            terms.append((key, op, [match.group("value")]))
        elif match.group("setop"):
            values = [value.strip() for value in match.group("values").split(",") if value.strip()]
            terms.append((key, match.group("setop"), values))
        else:
            terms.append((key, "exists", []))
    return terms


def _split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def validate_rule(
    *, finding_types: Any, alert_names: Any, evidence: Any, namespace_regex: str, label_selector: str
) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if not isinstance(finding_types, list) or not all(isinstance(item, str) for item in finding_types):
        errors.setdefault("finding_types", []).append("finding types must be a list of names")
    else:
        unknown = [item for item in finding_types if item not in FINDING_TYPES]
        if unknown:
            errors.setdefault("finding_types", []).append(
                f"unknown finding type {', '.join(map(repr, unknown))} (known: {', '.join(FINDING_TYPES)})"
            )
    if not isinstance(alert_names, list) or not all(isinstance(item, str) and item for item in alert_names):
        errors.setdefault("alert_names", []).append("alert names must be a list of non-empty names")
    if not errors and not finding_types and not alert_names:
        errors.setdefault("finding_types", []).append("a rule needs at least one finding type or alert name")
    if not isinstance(evidence, dict):
        errors.setdefault("evidence", []).append("evidence conditions must be an object (key path -> value)")
    if namespace_regex:
        try:
            re.compile(namespace_regex)
        except re.error as exc:
            errors.setdefault("namespace_regex", []).append(f"regex {namespace_regex!r} does not compile: {exc}")
    if label_selector:
        try:
            parse_label_selector(label_selector)
        except ValueError as exc:
            errors.setdefault("label_selector", []).append(str(exc))
    return errors


# --- Matching ------------------------------------------------------------------------------


def _evidence_value(evidence: Any, path: str) -> Any:
    """A dotted path in the evidence, at the top or under one finding type's own evidence."""
    missing = object()

    def walk(root: Any) -> Any:
        value = root
        for part in path.split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
            else:
                return missing
        return value

    found = walk(evidence)
    if found is missing and isinstance(evidence, dict):
        for item in evidence.values():
            found = walk(item)
            if found is not missing:
                break
    return None if found is missing else found


def _labels_of(incident: Any) -> dict[str, str]:
    """The workload's labels as the evidence records them.

    The detectors put the owning workload's labels in every finding's evidence (the incident
    keeps one entry per finding type, `evidence[type]["labels"]`); an Alertmanager alert brings
    its own (`evidence["alert:<name>"]["labels"]`). All are merged, a workload's own labels
    winning over an alert's, so one selector works whether a poll or an alert opened the incident.
    """
    evidence = incident.evidence if isinstance(incident.evidence, dict) else {}
    merged: dict[str, str] = {}

    def take(labels: Any) -> None:
        if isinstance(labels, dict):
            merged.update({str(k): str(v) for k, v in labels.items()})

    entries = [(key, value) for key, value in evidence.items() if isinstance(value, dict)]
    for _key, value in sorted(entries, key=lambda item: (not str(item[0]).startswith("alert:"), str(item[0]))):
        take(value.get("labels"))
    take(evidence.get("labels"))
    return merged


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for key, op, values in parse_label_selector(selector):
        present = key in labels
        if (
            (op == "=" and labels.get(key) != values[0])
            or (op == "!=" and present and labels[key] == values[0])
            or (op == "in" and labels.get(key) not in values)
            or (op == "notin" and present and labels[key] in values)
            or (op == "exists" and not present)
            or (op == "!exists" and present)
        ):
            return False
    return True


def why_not(rule: Any, incident: Any, cluster_ids: Iterable[int] | None = None) -> str | None:
    """None when the rule matches the incident (cooldown aside), else the first reason it does not."""
    if not rule.enabled:
        return "rule disabled"
    if not rule.playbook.enabled:
        return f"playbook {rule.playbook.name} disabled"
    types = set(incident.finding_types or [])
    if incident.primary_type:
        types.add(incident.primary_type)
    by_type = bool(types & set(rule.finding_types or []))
    by_alert = bool(incident.alertname) and incident.alertname in (rule.alert_names or [])
    if not (by_type or by_alert):
        return "no finding type or alert name in common"
    if SEVERITY_RANK.get(incident.severity or "info", 0) < SEVERITY_RANK.get(rule.min_severity, 0):
        return f"severity {incident.severity} below {rule.min_severity}"
    if rule.namespace_regex and not re.fullmatch(rule.namespace_regex, incident.namespace or ""):
        return f"namespace {incident.namespace!r} does not match {rule.namespace_regex!r}"
    for path, expected in (rule.evidence or {}).items():
        actual = _evidence_value(incident.evidence, path)
        if actual != expected:
            return f"evidence {path}={actual!r}, rule wants {expected!r}"
    if rule.label_selector and not selector_matches(rule.label_selector, _labels_of(incident)):
        return f"labels do not match {rule.label_selector!r}"
    ids = set(cluster_ids) if cluster_ids is not None else {cluster.pk for cluster in rule.clusters.all()}
    if ids and incident.cluster_id not in ids:
        return "incident's cluster not among the rule's clusters"
    return None


def cooldown_blocker(rule: Any, incident: Any) -> Any | None:
    """The latest run of this rule for the same workload inside its cooldown, or None."""
    if not rule.cooldown_seconds:
        return None
    from playbooks.models import PlaybookRun

    since = timezone.now() - timedelta(seconds=rule.cooldown_seconds)
    return (
        PlaybookRun.objects.filter(
            rule=rule,
            cluster_id=incident.cluster_id,
            incident__workload_kind=incident.workload_kind,
            incident__namespace=incident.namespace,
            incident__workload_name=incident.workload_name,
            created_at__gte=since,
        )
        .exclude(incident=incident)
        .order_by("-created_at")
        .first()
    )


def in_cooldown(rule: Any, incident: Any) -> bool:
    return cooldown_blocker(rule, incident) is not None


def _shares_a_type(rule: Any, incident: Any) -> bool:
    types = set(incident.finding_types or []) | ({incident.primary_type} if incident.primary_type else set())
    return bool(types & set(rule.finding_types or [])) or (
        bool(incident.alertname) and incident.alertname in (rule.alert_names or []))


# Rules (with their clusters) and playbook steps read once for a batch of incidents opened in one
# transaction -- an Alertmanager delivery opening 50 -- instead of once per `incident_opened`.
_BATCH: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("aiops_rules_batch", default=None)


@contextlib.contextmanager
def rules_read_once() -> Iterator[None]:
    """Inside: `decide` and `playbook_steps` read the rules and steps once, then reuse them.
    Only for a span in which no rule or playbook is edited (one ingest's announcements)."""
    token = _BATCH.set({})
    try:
        yield
    finally:
        _BATCH.reset(token)


def read_once(key: str, load: Callable[[], Any]) -> Any:
    """`load()`, once per `rules_read_once` span (every call outside one loads)."""
    batch = _BATCH.get()
    if batch is None:
        return load()
    if key not in batch:
        batch[key] = load()
    return batch[key]


def _rules_with_clusters() -> list[tuple[Any, list[int]]]:
    from playbooks.models import Rule

    batch = _BATCH.get()
    if batch is not None and "rules" in batch:
        return batch["rules"]
    rules = [(rule, [cluster.pk for cluster in rule.clusters.all()])
             for rule in Rule.objects.select_related("playbook").prefetch_related("clusters").order_by("-priority", "name")]
    if batch is not None:
        batch["rules"] = rules
    return rules


def playbook_steps(playbook: Any) -> list[Any]:
    """A playbook's steps in order (read once per batch inside `rules_read_once`)."""
    batch = _BATCH.get()
    cache = None if batch is None else batch.setdefault("steps", {})
    if cache is not None and playbook.pk in cache:
        return cache[playbook.pk]
    steps = list(playbook.steps.order_by("order"))
    if cache is not None:
        cache[playbook.pk] = steps
    return steps


def decide(incident: Any) -> tuple[Any | None, dict[str, Any]]:
    """The highest-priority enabled rule that matches, or None and why nothing will run (as
    data: `code`, `text` and the facts, stored on the incident for every surface to show).

    A winning rule in cooldown blocks the lower ones too: it already ran for this workload
    recently, and falling through to a weaker playbook would act on the same fault twice.
    """
    closest: tuple[Any, str] | None = None
    closest_disabled: tuple[Any, str] | None = None
    for rule, cluster_ids in _rules_with_clusters():
        why = why_not(rule, incident, cluster_ids)
        if why is None:
            blocker = cooldown_blocker(rule, incident)
            if blocker is not None:
                until = blocker.created_at + timedelta(seconds=rule.cooldown_seconds)
                return None, {
                    "code": "cooldown", "rule": rule.name, "run": blocker.pk, "until": until.isoformat(),
                    "text": f"rule {rule.name} matched but is in cooldown until {until:%H:%M} UTC because of run "
                            f"#{blocker.pk} ({blocker.playbook_name}, {blocker.outcome or blocker.state})",
                }
            return rule, {"code": "matched", "rule": rule.name, "text": f"rule {rule.name} (priority {rule.priority})"}
        if _shares_a_type(rule, incident):
            if rule.enabled and closest is None:
                closest = (rule, why)
            elif not rule.enabled and closest_disabled is None:
                closest_disabled = (rule, why)
    closest = closest or closest_disabled
    if closest is not None:
        rule, why = closest
        return None, {"code": "no_match", "rule": rule.name, "failed": why,
                      "text": f"no rule matched; the closest is rule {rule.name}: {why}"}
    what = incident.primary_type or incident.alertname or "this incident"
    return None, {"code": "no_match", "rule": "", "failed": "",
                  "text": f"no rule matched: no rule lists {what}"}


def best_rule(incident: Any) -> tuple[Any | None, str]:
    """`decide`, with the reason as one line of text."""
    rule, why = decide(incident)
    return rule, why["text"]
