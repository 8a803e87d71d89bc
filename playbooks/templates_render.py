"""Step argument templates: a tiny, safe language rendered from an incident.

A string argument may hold `{{ path|filter:arg|... }}` expressions. Paths are dotted lookups
into a fixed context built from the incident (see `ROOTS`); there are no calls, no attribute
access on Python objects and no loops, so a template written in the admin or a YAML file can
read incident data and nothing else. A string that is exactly one expression renders to the
value itself (a list stays a list, a number a number); anything else is interpolated as text.

Templates are checked when a step is saved (`template_errors`): unknown roots, fields the
incident does not have, unknown filters and malformed arguments are named there, so a typo is
a form error and not a failed step at 3 a.m.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC
from typing import Any

# An expression holds no braces, so "{{ a }} {{ b }}" is two expressions, never one.
EXPRESSION = re.compile(r"\{\{((?:(?!\{\{|\}\}).)*)\}\}", re.DOTALL)
PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_-]+)*$")

# Roots of the context and what they are, shown in error messages and the README.
ROOTS: dict[str, str] = {
    "cluster": "the cluster's name",
    "namespace": "the workload's namespace",
    "kind": "the workload's kind (Deployment, StatefulSet, Node, Pod, ...)",
    "name": "the workload's name",
    "workload": "kind, namespace, name",
    "deployment": "the owning Deployment's name",
    "pods": "the incident's currently affected pods",
    "pod": "the first affected pod",
    "node": "the node (node incidents) or the node of the first affected pod",
    "container": "the failing container named in the evidence",
    "hpa": "the HorizontalPodAutoscaler at its maximum (from the evidence; else the workload's name)",
    "evidence": "the incident's evidence (any key)",
    "rca": "the incident's RCA report once an rca step ran (root_cause, failure_class, ...)",
    "incident": "the incident's fields",
    "run": "id, playbook, started (the run's start, UTC, as 2026-01-31T09:10:00Z: an idempotency token)",
}
WORKLOAD_KEYS = ("kind", "namespace", "name")
RUN_KEYS = ("id", "playbook", "started")
# Roots whose sub-keys are free-form data, not checked at save time.
OPEN_ROOTS = ("evidence", "rca")
MISSING = object()


class TemplateError(ValueError):
    """A template that cannot be parsed or rendered; the message names the expression."""


@dataclass(frozen=True)
class Expression:
    source: str
    path: tuple[str, ...]
    filters: tuple[tuple[str, Any], ...]


def _number(name: str, arg: Any) -> float | int:
    if isinstance(arg, bool) or not isinstance(arg, (int, float)):
        raise TemplateError(f"filter {name!r} needs a number, got {arg!r}")
    return arg


def _to_number(value: Any, name: str) -> float | int:
    if isinstance(value, bool):
        raise TemplateError(f"filter {name!r} cannot apply to {value!r}")
    if isinstance(value, (int, float)):
        return value
    try:
        return int(str(value))
    except ValueError:
        try:
            return float(str(value))
        except ValueError:
            raise TemplateError(f"filter {name!r} cannot apply to {value!r} (not a number)") from None


def _whole(number: float | int) -> float | int:
    return int(number) if float(number).is_integer() else number


QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|K|M|G|T|)$")
QUANTITY_FACTORS = {
    "": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}


def scale_quantity(value: Any, factor: Any) -> str:
    """A Kubernetes memory quantity times a factor, rounded up to whole Mi ("256Mi" x 1.5 -> "384Mi")."""
    match = QUANTITY.fullmatch(str(value).strip())
    if not match:
        raise TemplateError(f"filter 'scale_quantity' cannot apply to {value!r} (not a memory quantity like 256Mi)")
    number = float(match.group(1)) * QUANTITY_FACTORS[match.group(2)] * _number("scale_quantity", factor)
    mebibytes = -(-int(number) // 2**20)
    return f"{max(mebibytes, 1)}Mi"


FILTERS: dict[str, tuple[bool, Any]] = {
    # name: (takes an argument, function(value, arg))
    "default": (True, lambda value, arg: arg if value is MISSING or value in ("", None, []) else value),
    "first": (False, lambda value, arg: value[0] if isinstance(value, list) and value else MISSING),
    "join": (True, lambda value, arg: str(arg).join(str(item) for item in value) if isinstance(value, list) else value),
    "int": (False, lambda value, arg: int(_to_number(value, "int"))),
    "lower": (False, lambda value, arg: str(value).lower()),
    "upper": (False, lambda value, arg: str(value).upper()),
    "add": (True, lambda value, arg: _whole(_to_number(value, "add") + _number("add", arg))),
    "mul": (True, lambda value, arg: _whole(_to_number(value, "mul") * _number("mul", arg))),
    "min": (True, lambda value, arg: _whole(min(_to_number(value, "min"), _number("min", arg)))),
    "max": (True, lambda value, arg: _whole(max(_to_number(value, "max"), _number("max", arg)))),
    "scale_quantity": (True, scale_quantity),
}


def parse_expression(source: str) -> Expression:
    parts = [part.strip() for part in _split_filters(source.strip())]
    if not parts or not parts[0]:
        raise TemplateError(f"empty expression {{{{{source}}}}}")
    head = parts[0]
    if not PATH.fullmatch(head):
        raise TemplateError(f"{{{{{source.strip()}}}}}: {head!r} is not a field path (use names joined by dots)")
    filters: list[tuple[str, Any]] = []
    for part in parts[1:]:
        name, sep, raw = part.partition(":")
        name = name.strip()
        if name not in FILTERS:
            raise TemplateError(
                f"{{{{{source.strip()}}}}}: unknown filter {name!r} (known: {', '.join(sorted(FILTERS))})"
            )
        takes_arg = FILTERS[name][0]
        if takes_arg and not sep:
            raise TemplateError(f"{{{{{source.strip()}}}}}: filter {name!r} needs an argument ({name}:VALUE)")
        if not takes_arg and sep:
            raise TemplateError(f"{{{{{source.strip()}}}}}: filter {name!r} takes no argument")
        arg: Any = None
        if sep:
            try:
                arg = json.loads(raw.strip())
            except ValueError:
                raise TemplateError(
                    f"{{{{{source.strip()}}}}}: argument {raw.strip()!r} of {name!r} is not a JSON value "
                    '(quote strings: default:"app")'
                ) from None
        filters.append((name, arg))
    return Expression(source=source.strip(), path=tuple(head.split(".")), filters=tuple(filters))


def _split_filters(source: str) -> list[str]:
    """Split on '|' outside double quotes, so join:"|" works."""
    parts, current, quoted, escaped = [], [], False, False
    for char in source:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == '"':
            current.append(char)
            quoted = not quoted
        elif char == "|" and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def expressions_in(value: Any) -> list[Expression]:
    """Every expression in a (nested) argument value; raises TemplateError on a bad one."""
    found: list[Expression] = []
    if isinstance(value, str):
        if value.count("{{") != value.count("}}"):
            raise TemplateError(f"unbalanced braces in {value!r}")
        found.extend(parse_expression(match.group(1)) for match in EXPRESSION.finditer(value))
    elif isinstance(value, dict):
        for item in value.values():
            found.extend(expressions_in(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(expressions_in(item))
    return found


def incident_field_names() -> list[str]:
    from playbooks.models import Incident

    return sorted(field.name for field in Incident._meta.concrete_fields)


def template_errors(value: Any, *, where: str = "args") -> list[str]:
    """Problems with the templates in a step's arguments, each naming the expression."""
    try:
        expressions = expressions_in(value)
    except TemplateError as exc:
        return [f"{where}: {exc}"]
    errors: list[str] = []
    incident_fields: list[str] | None = None
    for expression in expressions:
        root, rest = expression.path[0], expression.path[1:]
        label = f"{where}: {{{{{expression.source}}}}}"
        if root not in ROOTS:
            errors.append(f"{label} references {root!r}, which the incident does not have (known: {', '.join(ROOTS)})")
        elif root == "incident":
            incident_fields = incident_fields if incident_fields is not None else incident_field_names()
            if not rest:
                errors.append(f"{label}: name one of the incident's fields (incident.namespace, ...)")
            elif rest[0] not in incident_fields:
                errors.append(f"{label}: the incident has no field {rest[0]!r} (fields: {', '.join(incident_fields)})")
        elif root == "workload" and (len(rest) != 1 or rest[0] not in WORKLOAD_KEYS):
            errors.append(f"{label}: use workload.kind, workload.namespace or workload.name")
        elif root == "run" and (len(rest) != 1 or rest[0] not in RUN_KEYS):
            errors.append(f"{label}: use run.id, run.playbook or run.started")
        elif root == "pods" and rest and not all(part.isdigit() for part in rest):
            errors.append(f"{label}: pods is a list; use pods.0 or the first/join filters")
        elif root not in OPEN_ROOTS and root not in ("incident", "workload", "run", "pods") and rest:
            errors.append(f"{label}: {root!r} is a plain value and has no field {rest[0]!r}")
    return errors


def _lookup(context: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = context
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


def evaluate(expression: Expression, context: dict[str, Any]) -> Any:
    value = _lookup(context, expression.path)
    if value is MISSING and expression.path[0] == "evidence" and len(expression.path) > 1:
        # Evidence is grouped by finding type; `evidence.memory_limit` means the key in the
        # primary type's evidence, else in any type's.
        evidence = context.get("evidence") or {}
        primary = (context.get("incident") or {}).get("primary_type") or ""
        for group in sorted(evidence, key=lambda key: key != primary):
            if isinstance(evidence[group], dict):
                value = _lookup(evidence[group], expression.path[1:])
                if value is not MISSING:
                    break
    for name, arg in expression.filters:
        if value is MISSING and name != "default":
            break
        value = FILTERS[name][1](value, arg)
    if value is MISSING:
        raise TemplateError(f"{{{{{expression.source}}}}}: {_missing_reason(expression.path)}")
    return value


def _missing_reason(path: tuple[str, ...]) -> str:
    root = path[0]
    if root in ("pod", "pods"):
        return "the incident has no affected pods (add |default:... to allow that)"
    if root == "node":
        return "the incident names no node"
    if root == "evidence":
        return f"the incident's evidence has no {'.'.join(path[1:])!r}"
    return f"the incident has no value for {'.'.join(path)!r}"


def render_value(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    if not isinstance(value, str) or "{{" not in value:
        return value
    whole = EXPRESSION.fullmatch(value.strip())
    if whole:
        return evaluate(parse_expression(whole.group(1)), context)

    def substitute(match: re.Match[str]) -> str:
        result = evaluate(parse_expression(match.group(1)), context)
        if isinstance(result, (dict, list)):
            return json.dumps(result, sort_keys=True)
        return str(result)

    return EXPRESSION.sub(substitute, value)


def _pod_name(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("name") or item.get("pod") or "")
    text = str(item)
    return text.rsplit("/", 1)[-1]


def _find(evidence: Any, key: str) -> Any:
    """A key at the top of the evidence or one level down (evidence grouped by finding type)."""
    if not isinstance(evidence, dict):
        return MISSING
    if key in evidence and evidence[key] not in (None, ""):
        return evidence[key]
    for item in evidence.values():
        if isinstance(item, dict) and item.get(key) not in (None, ""):
            return item[key]
    return MISSING


def _hpa_name(incident: Any, evidence: dict[str, Any]) -> Any:
    for key in ("hpa", "hpa_name"):
        found = _find(evidence, key)
        if found is not MISSING:
            return found
    # The watch loop records where each finding was seen ("HorizontalPodAutoscaler/ns/name").
    seen_on = (evidence.get("hpa_maxed") or {}).get("seen_on") if isinstance(evidence.get("hpa_maxed"), dict) else None
    for where in seen_on or []:
        if str(where).startswith("HorizontalPodAutoscaler/"):
            return str(where).rsplit("/", 1)[-1]
    return incident.workload_name or MISSING


def incident_context(incident: Any, run: Any = None) -> dict[str, Any]:
    """The context templates see: plain data only, built from the incident's fields."""
    evidence = incident.evidence if isinstance(incident.evidence, dict) else {}
    kind = incident.workload_kind or ""
    pods = [name for name in (_pod_name(item) for item in (incident.affected_pods or [])) if name]
    if kind == "Node":
        node: Any = incident.workload_name
    else:
        node = _find(evidence, "node")
        if node is MISSING:
            node = _find(evidence, "node_name")
    deployment: Any = incident.workload_name if kind == "Deployment" else _find(evidence, "deployment")
    fields = {}
    for field in type(incident)._meta.concrete_fields:
        raw = getattr(incident, field.attname)
        fields[field.name] = raw if isinstance(raw, (str, int, float, bool, list, dict, type(None))) else str(raw)
    fields["cluster"] = incident.cluster.name if getattr(incident, "cluster_id", None) else ""
    context: dict[str, Any] = {
        "cluster": fields["cluster"],
        "namespace": incident.namespace or "",
        "kind": kind,
        "name": incident.workload_name or "",
        "workload": {"kind": kind, "namespace": incident.namespace or "", "name": incident.workload_name or ""},
        "deployment": deployment,
        "pods": pods,
        "pod": pods[0] if pods else MISSING,
        "node": node,
        "container": _find(evidence, "container"),
        "hpa": _hpa_name(incident, evidence),
        "evidence": evidence,
        "rca": incident.rca_report if isinstance(incident.rca_report, dict) else {},
        "incident": fields,
        "run": _run_context(run),
    }
    return context


def _run_context(run: Any) -> dict[str, Any]:
    if run is None:
        return {"id": 0, "playbook": "", "started": ""}
    started = run.started_at or run.created_at
    return {
        "id": run.pk, "playbook": run.playbook_name,
        "started": started.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if started else "",
    }


def render_args(args: dict[str, Any], incident: Any, run: Any = None) -> dict[str, Any]:
    rendered = render_value(args, incident_context(incident, run))
    if not isinstance(rendered, dict):  # pragma: no cover - args are dicts by validation
        raise TemplateError("arguments must be an object")
    return rendered
