"""Step conditions: `when:` expressions in CEL over what the argument templates see.

A step may carry a condition such as

    rca.failure_class in ["app_crash", "unknown"] && pod_count <= 1

written in CEL (the Common Expression Language Kubernetes uses for admission policies),
parsed and evaluated by `cel-python`: no Python is ever evaluated, there are no loops and no
side effects. The names a condition may use are the template roots (`rca`, `evidence`,
`incident`, `pods`, ...), `pod_count` (the number of affected pods) and `steps`: the earlier
steps of the same playbook by name, each with `ok`, `state`, `skipped`, `output` and `data`.

cel-python checks syntax only, so `check_condition` adds a small static type check over its
parse tree: unknown names, unknown fields of the fixed structures (`rca`, `incident`,
`workload`, `run`, a step's result), a step that does not come earlier, and operators applied
to the wrong types (`rca.confidence > "high"`, `!pod_count`, a condition that is not a
boolean) are refused when the playbook is saved, naming the step. `evidence` and a step's
`data` are free-form and checked only when the condition runs.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import celpy
from celpy import celparser
from lark import Token, Tree

__all__ = [
    "ConditionError",
    "check_condition",
    "condition_context",
    "evaluate_condition",
    "playbook_condition_errors",
]

STRING, INT, UINT, DOUBLE, BOOL, NULL, BYTES, LIST, MAP, DYN = (
    "string", "int", "uint", "double", "bool", "null", "bytes", "list", "map", "dyn",
)
NUMERIC = {INT, UINT, DOUBLE}
STEP_IDENT = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")


class Struct(dict):
    """A value with a fixed set of fields (a typo in a field name is an error)."""

    def __init__(self, label: str, fields: Mapping[str, Any]) -> None:
        super().__init__(fields)
        self.label = label


class ConditionError(ValueError):
    """A condition that does not parse, names what does not exist, or mixes types."""


RCA_FIELDS = Struct("rca", {
    "failure_class": STRING, "confidence": DOUBLE, "root_cause": STRING, "evidence": LIST,
    "recommended_actions": LIST, "related_resources": LIST, "method": STRING, "finding_types": LIST,
})
STEP_FIELDS = {"ok": BOOL, "state": STRING, "skipped": BOOL, "output": STRING, "data": DYN}


def _incident_struct() -> Struct:
    from django.db import models as m

    from playbooks.models import Incident

    fields: dict[str, Any] = {}
    for field in Incident._meta.concrete_fields:
        if isinstance(field, m.JSONField):
            kind = DYN
        elif isinstance(field, (m.BooleanField,)):
            kind = BOOL
        elif isinstance(field, (m.AutoField, m.BigAutoField, m.IntegerField, m.PositiveIntegerField)):
            kind = INT
        elif isinstance(field, m.ForeignKey):
            kind = STRING if field.name == "cluster" else INT
        else:
            kind = STRING
        fields[field.name] = kind
    return Struct("incident", fields)


def root_types(earlier_steps: list[str] | None) -> dict[str, Any]:
    steps: Any = MAP
    if earlier_steps is not None:
        steps = Struct("steps", {name: Struct(f"steps.{name}", STEP_FIELDS) for name in earlier_steps})
    return {
        "cluster": STRING, "namespace": STRING, "kind": STRING, "name": STRING,
        "workload": Struct("workload", {"kind": STRING, "namespace": STRING, "name": STRING}),
        "deployment": STRING, "pods": LIST, "pod": STRING, "pod_count": INT, "node": STRING,
        "container": STRING, "hpa": STRING, "evidence": MAP, "rca": RCA_FIELDS,
        "incident": _incident_struct(), "run": Struct("run", {"id": INT, "playbook": STRING, "started": STRING}),
        "steps": steps,
    }


# --- Parsing and checking ------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _parse(source: str) -> Tree:
    if not isinstance(source, str) or not source.strip():
        raise ConditionError("the condition is empty")
    if len(source) > 2000:
        raise ConditionError("the condition is longer than 2,000 characters")
    try:
        return celparser.CELParser().parse(source)
    except celparser.CELParseError as exc:
        column = getattr(exc, "column", None)
        where = f" at column {column}" if column else ""
        near = source[column - 1: column + 19] if column and column <= len(source) else ""
        detail = f" near {near!r}" if near.strip() else " (it ends too soon)"
        raise ConditionError(f"syntax error in {source!r}{where}{detail}") from None


@functools.lru_cache(maxsize=1024)
def _program(source: str) -> Any:
    return celpy.Environment().program(_parse(source))


def _name(kind: Any) -> str:
    if isinstance(kind, Struct):
        return f"{kind.label} (a structure)"
    return kind


def _base(kind: Any) -> str:
    return MAP if isinstance(kind, Struct) else kind


class _Checker:
    def __init__(self, roots: dict[str, Any]) -> None:
        self.roots = roots
        self.bound: dict[str, Any] = {}

    def fail(self, message: str) -> None:
        raise ConditionError(message)

    def check(self, node: Any) -> Any:
        if isinstance(node, Token):
            self.fail(f"unexpected {node!s}")
        handler = getattr(self, f"t_{node.data}", None)
        if handler is None:
            self.fail(f"{node.data.replace('_', ' ')} is not supported in conditions")
        return handler(node)

    def _single(self, node: Tree) -> Any:
        return self.check(node.children[0])

    t_member = t_primary = t_paren_expr = _single

    def t_expr(self, node: Tree) -> Any:
        if len(node.children) == 1:
            return self.check(node.children[0])
        cond, then, other = (self.check(child) for child in node.children)
        self.want_bool(cond, "the condition of ? :")
        return then if then == other else DYN

    def want_bool(self, kind: Any, where: str) -> None:
        if kind not in (BOOL, DYN):
            self.fail(f"{where} needs a boolean, not {_name(kind)}")

    def _logical(self, node: Tree, op: str) -> Any:
        if len(node.children) == 1:
            return self.check(node.children[0])
        for child in node.children:
            self.want_bool(self.check(child), f"'{op}'")
        return BOOL

    def t_conditionalor(self, node: Tree) -> Any:
        return self._logical(node, "||")

    def t_conditionaland(self, node: Tree) -> Any:
        return self._logical(node, "&&")

    def t_relation(self, node: Tree) -> Any:
        if len(node.children) == 1:
            return self.check(node.children[0])
        op_tree, right_tree = node.children
        left, right = self.check(op_tree.children[0]), self.check(right_tree)
        op = op_tree.data.removeprefix("relation_")
        symbol = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=", "in": "in"}[op]
        lb, rb = _base(left), _base(right)
        if op == "in":
            if rb not in (LIST, MAP, DYN):
                self.fail(f"'in' needs a list or a map on its right, not {_name(right)}")
            return BOOL
        if DYN in (lb, rb):
            return BOOL
        if op in ("eq", "ne"):
            if NULL in (lb, rb) or lb == rb or (lb in NUMERIC and rb in NUMERIC):
                return BOOL
            self.fail(f"'{symbol}' compares {_name(left)} with {_name(right)}")
        if (lb in NUMERIC and rb in NUMERIC) or (lb == rb and lb in (STRING, BYTES)):
            return BOOL
        self.fail(f"'{symbol}' cannot order {_name(left)} and {_name(right)}")
        return BOOL  # pragma: no cover

    def _arith(self, node: Tree, prefix: str) -> Any:
        if len(node.children) == 1:
            return self.check(node.children[0])
        op_tree, right_tree = node.children
        left, right = _base(self.check(op_tree.children[0])), _base(self.check(right_tree))
        op = op_tree.data.removeprefix(prefix)
        symbol = {"add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%"}[op]
        if DYN in (left, right):
            return DYN
        if left in NUMERIC and right in NUMERIC:
            return DOUBLE if DOUBLE in (left, right) else left
        if op == "add" and left == right and left in (STRING, LIST, BYTES):
            return left
        self.fail(f"'{symbol}' cannot apply to {left} and {right}")
        return DYN  # pragma: no cover

    def t_addition(self, node: Tree) -> Any:
        return self._arith(node, "addition_")

    def t_multiplication(self, node: Tree) -> Any:
        return self._arith(node, "multiplication_")

    def t_unary(self, node: Tree) -> Any:
        if len(node.children) == 1:
            return self.check(node.children[0])
        op, operand = node.children
        kind = self.check(operand)
        if op.data == "unary_not":
            self.want_bool(kind, "'!'")
            return BOOL
        if kind not in NUMERIC and kind != DYN:
            self.fail(f"'-' needs a number, not {_name(kind)}")
        return kind

    def t_literal(self, node: Tree) -> Any:
        token = node.children[0]
        return {
            "INT_LIT": INT, "UINT_LIT": UINT, "FLOAT_LIT": DOUBLE, "STRING_LIT": STRING, "MLSTRING_LIT": STRING,
            "BYTES_LIT": BYTES, "BOOL_LIT": BOOL, "NULL_LIT": NULL,
        }.get(token.type, DYN)

    def t_ident(self, node: Tree) -> Any:
        name = str(node.children[0])
        if name in self.bound:
            return self.bound[name]
        if name not in self.roots:
            self.fail(f"unknown name {name!r} (known: {', '.join(sorted(self.roots))})")
        return self.roots[name]

    def _field(self, kind: Any, field: str, path: str) -> Any:
        if isinstance(kind, Struct):
            if field not in kind:
                if kind.label == "steps":
                    known = ", ".join(kind) or "none"
                    self.fail(f"no earlier step named {field!r} (earlier steps: {known})")
                self.fail(f"{kind.label} has no field {field!r} (fields: {', '.join(sorted(kind))})")
            return kind[field]
        if kind in (MAP, DYN):
            return DYN
        self.fail(f"{path} is {_name(kind)} and has no field {field!r}")
        return DYN  # pragma: no cover

    def t_member_dot(self, node: Tree) -> Any:
        target, field = node.children
        return self._field(self.check(target), str(field), _source(target))

    def t_member_index(self, node: Tree) -> Any:
        target, index = node.children
        kind, key = self.check(target), self.check(index)
        literal = _string_literal(index)
        if isinstance(kind, Struct) and literal is not None:
            return self._field(kind, literal, _source(target))
        base = _base(kind)
        if base == LIST:
            if key not in (INT, UINT, DYN):
                self.fail(f"a list is indexed by a number, not {_name(key)}")
            return DYN
        if base in (MAP, DYN):
            return DYN
        self.fail(f"{_source(target)} is {_name(kind)} and cannot be indexed")
        return DYN  # pragma: no cover

    def _args(self, node: Tree | None) -> list[Tree]:
        return list(node.children) if node is not None else []

    def t_ident_arg(self, node: Tree) -> Any:
        name, *rest = node.children
        args = self._args(rest[0] if rest else None)
        name = str(name)
        if name == "has":
            if len(args) != 1 or not _is_member_dot(args[0]):
                self.fail("has() takes one field selection, e.g. has(evidence.memory_limit)")
            target, field = _member_dot_parts(args[0])
            kind = self.check(target)
            if isinstance(kind, Struct):
                self._field(kind, field, _source(target))
            return BOOL
        kinds = [self.check(arg) for arg in args]
        if name == "size":
            if len(kinds) != 1 or _base(kinds[0]) not in (STRING, LIST, MAP, BYTES, DYN):
                self.fail("size() takes one string, list or map")
            return INT
        conversions = {"int": INT, "uint": UINT, "double": DOUBLE, "string": STRING, "bool": BOOL}
        if name in conversions:
            if len(kinds) != 1:
                self.fail(f"{name}() takes one value")
            return conversions[name]
        self.fail(f"unknown function {name}() (known: has, size, int, uint, double, string, bool)")
        return DYN  # pragma: no cover

    def t_member_dot_arg(self, node: Tree) -> Any:
        target, method, *rest = node.children
        method = str(method)
        args = self._args(rest[0] if rest else None)
        kind = _base(self.check(target))
        if method in ("exists", "all", "exists_one", "map", "filter"):
            if kind not in (LIST, MAP, DYN):
                self.fail(f".{method}() applies to a list or a map, not {kind}")
            if len(args) != 2 or _ident_name(args[0]) is None:
                self.fail(f".{method}() takes a variable and an expression, e.g. pods.{method}(p, p.startsWith(\"web\"))")
            variable = _ident_name(args[0])
            saved = self.bound.get(variable, None)
            self.bound[variable] = DYN
            try:
                body = self.check(args[1])
            finally:
                if saved is None:
                    self.bound.pop(variable, None)
                else:
                    self.bound[variable] = saved
            if method in ("exists", "all", "exists_one", "filter"):
                self.want_bool(body, f".{method}()")
            return LIST if method in ("map", "filter") else BOOL
        kinds = [self.check(arg) for arg in args]
        if method in ("startsWith", "endsWith", "contains", "matches"):
            if kind not in (STRING, DYN) or len(kinds) != 1 or kinds[0] not in (STRING, DYN):
                self.fail(f".{method}() compares a string with a string")
            if method == "matches" and _string_literal(args[0]) is not None:
                try:
                    re.compile(_string_literal(args[0]) or "")
                except re.error as exc:
                    self.fail(f"the pattern of .matches() does not compile: {exc}")
            return BOOL
        if method == "size":
            if kind not in (STRING, LIST, MAP, BYTES, DYN) or kinds:
                self.fail(".size() takes no argument and applies to a string, list or map")
            return INT
        self.fail(f"unknown method .{method}() (known: startsWith, endsWith, contains, matches, size, exists, all, "
                  "exists_one, map, filter)")
        return DYN  # pragma: no cover

    def t_list_lit(self, node: Tree) -> Any:
        for child in self._args(node.children[0] if node.children else None):
            self.check(child)
        return LIST

    def t_map_lit(self, node: Tree) -> Any:
        if node.children:
            for child in node.children[0].children:
                self.check(child)
        return MAP


def _source(node: Any) -> str:
    """A member path as written (`rca.failure_class`), for messages."""
    if isinstance(node, Token):
        return str(node)
    if node.data == "ident":
        return str(node.children[0])
    if node.data == "member_dot":
        return f"{_source(node.children[0])}.{node.children[1]}"
    if len(node.children) == 1:
        return _source(node.children[0])
    return "the value"


def _unwrap(node: Any) -> Any:
    while isinstance(node, Tree) and len(node.children) == 1 and node.data in (
        "expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication", "unary", "member",
        "primary",
    ):
        node = node.children[0]
    return node


def _is_member_dot(node: Any) -> bool:
    return isinstance(_unwrap(node), Tree) and _unwrap(node).data == "member_dot"


def _member_dot_parts(node: Any) -> tuple[Any, str]:
    inner = _unwrap(node)
    return inner.children[0], str(inner.children[1])


def _ident_name(node: Any) -> str | None:
    inner = _unwrap(node)
    if isinstance(inner, Tree) and inner.data == "ident":
        return str(inner.children[0])
    return None


def _string_literal(node: Any) -> str | None:
    inner = _unwrap(node)
    if isinstance(inner, Tree) and inner.data == "literal" and inner.children[0].type == "STRING_LIT":
        text = str(inner.children[0])
        return text[1:-1] if text[:1] in "\"'" else None
    return None


def check_condition(source: str, earlier_steps: list[str] | None) -> None:
    """Raise ConditionError when the condition cannot be right for any incident."""
    tree = _parse(source)
    kind = _Checker(root_types(earlier_steps)).check(tree)
    if kind not in (BOOL, DYN):
        raise ConditionError(f"the condition gives {_name(kind)}, not true or false")


def playbook_condition_errors(steps: list[tuple[str, str]]) -> dict[int, str]:
    """{index: message} for the steps (name, condition) whose condition is wrong.

    The one validator the admin, the YAML import and the API call: each condition is checked
    against the names of the steps before it.
    """
    errors: dict[int, str] = {}
    names: list[str] = []
    for index, (name, condition) in enumerate(steps):
        if condition and condition.strip():
            try:
                check_condition(condition, names)
            except ConditionError as exc:
                errors[index] = f"step {name!r}: when: {exc}"
        names.append(name)
    return errors


# --- Evaluating ----------------------------------------------------------------------------


def condition_context(template_context: Mapping[str, Any], step_results: Mapping[str, Any]) -> dict[str, Any]:
    """The values a condition sees: the template context with plain values, and the steps."""
    from playbooks.templates_render import MISSING

    context: dict[str, Any] = {}
    for key, value in template_context.items():
        context[key] = "" if value is MISSING else value
    context["pod_count"] = len(template_context.get("pods") or [])
    context["evidence"] = _flat_evidence(template_context)
    rca = dict(template_context.get("rca") or {})
    for field, kind in RCA_FIELDS.items():
        rca.setdefault(field, {STRING: "", DOUBLE: 0.0, LIST: []}[kind])
    rca["confidence"] = float(rca.get("confidence") or 0.0)
    context["rca"] = rca
    context["steps"] = dict(step_results)
    return context


def _flat_evidence(template_context: Mapping[str, Any]) -> dict[str, Any]:
    """Evidence is grouped by finding type; `evidence.memory_limit` reads the primary type's key,
    else any type's (as templates do), and `evidence.oom_killed.memory_limit` still works."""
    evidence = template_context.get("evidence") or {}
    if not isinstance(evidence, Mapping):
        return {}
    primary = (template_context.get("incident") or {}).get("primary_type") or ""
    flat: dict[str, Any] = {}
    for group in sorted(evidence, key=lambda key: key == primary):
        if isinstance(evidence[group], Mapping):
            flat.update(evidence[group])
    flat.update(evidence)
    return flat


def evaluate_condition(source: str, context: Mapping[str, Any]) -> bool:
    """True or False; ConditionError when it cannot be evaluated for this incident."""
    activation = {key: celpy.json_to_cel(_plain(value)) for key, value in context.items()}
    try:
        result = _program(source).evaluate(activation)
    except ConditionError:
        raise
    except Exception as exc:  # noqa: BLE001 - cel-python raises several kinds; the message is what matters
        raise ConditionError(_readable(exc)) from None
    if isinstance(result, celpy.CELEvalError):
        raise ConditionError(_readable(result))
    if not isinstance(result, celpy.celtypes.BoolType):
        raise ConditionError(f"gave {type(result).__name__.removesuffix('Type').lower()}, not true or false")
    return bool(result)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def _readable(exc: Any) -> str:
    args = getattr(exc, "args", ())
    text = str(args[0]) if args else str(exc)
    if len(args) > 1 and args[1] is KeyError:
        found = re.search(r"'([^']*)'", text)
        missing = found.group(1) if found else (str.__str__(args[2][0]) if len(args) > 2 and args[2] else "")
        return f"the incident has no value for {missing!r}" if missing else "a value the condition reads is missing"
    if len(args) > 1 and args[1] is TypeError:
        return f"the values have the wrong types ({text.split(' applied to ')[0].replace('Token(', '').strip()})"
    return text[:300]


def used_values(source: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """The values of the paths a condition reads (recorded when a step is skipped)."""
    tree = _parse(source)
    paths: list[str] = []
    for node in tree.iter_subtrees_topdown():
        if node.data == "member_dot":
            path = _source(node)
            if path and not any(other.startswith(path + ".") for other in paths):
                paths.append(path)
        elif node.data == "ident" and str(node.children[0]) in context:
            paths.append(str(node.children[0]))
    values: dict[str, Any] = {}
    for path in paths:
        if any(other != path and other.startswith(path + ".") for other in paths):
            continue
        value: Any = context
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, (dict, list)) and len(str(value)) > 200:
            value = f"({type(value).__name__} of {len(value)})"
        values[path] = value
    return values
