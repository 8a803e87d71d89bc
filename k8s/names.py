"""Kubernetes names and the checks every layer uses on them, whole-string only.

A Python `re` pattern `^...$` matches "cart\\n": `$` also matches before a final newline, and
`match`/`search` stop there. Names checked that way reached the Kubernetes API with the newline.
So every check here is `fullmatch` (Django validators included), and JSON Schemas, whose
`pattern` is an ECMA-262 regex where `$` means the end of the input, are validated with that
meaning (`validate_json`), not Python's.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema
from django.core.validators import RegexValidator
from django.utils.deconstruct import deconstructible

# DNS-1123 label (namespaces, containers, clusters) and subdomain (pods, deployments, nodes, HPAs),
# as JSON Schema patterns; Python checks them with fullmatch.
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_MAX = 63
SUBDOMAIN_MAX = 253

_LABEL = re.compile(DNS1123_LABEL)
_SUBDOMAIN = re.compile(DNS1123_SUBDOMAIN)


def is_dns1123_label(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= LABEL_MAX and _LABEL.fullmatch(value) is not None


def is_dns1123_subdomain(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= SUBDOMAIN_MAX and _SUBDOMAIN.fullmatch(value) is not None


@deconstructible(path="k8s.names.FullMatchValidator")
class FullMatchValidator(RegexValidator):
    """Django's RegexValidator, but the whole value must match (it uses `search`, so `^a$`
    accepts "a\\n"). Patterns keep their `^...$` for people reading them."""

    def __call__(self, value: Any) -> None:
        from django.core.exceptions import ValidationError

        matched = self.regex.fullmatch(str(value)) is not None
        if matched == self.inverse_match:
            raise ValidationError(self.message, code=self.code, params={"value": value})


def ecma_pattern(pattern: str) -> str:
    """An ECMA-262 `pattern` as Python must read it: each `$` outside a character class means
    the end of the input (`\\Z`), not "the end or before a final newline"."""
    out: list[str] = []
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            out.append(pattern[index:index + 2])
            index += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        elif char == "$" and not in_class:
            char = r"\Z"
        out.append(char)
        index += 1
    return "".join(out)


_compiled: dict[str, re.Pattern[str]] = {}


def _pattern_keyword(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Any:
    if not validator.is_type(instance, "string"):
        return
    compiled = _compiled.get(pattern)
    if compiled is None:
        compiled = _compiled[pattern] = re.compile(ecma_pattern(pattern))
    if compiled.search(instance) is None:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _strict(base: Any) -> Any:
    return jsonschema.validators.extend(base, {"pattern": _pattern_keyword})


def validate_json(instance: Any, schema: dict[str, Any]) -> None:
    """`jsonschema.validate` with the JSON Schema meaning of `pattern` (see `ecma_pattern`)."""
    base = jsonschema.validators.validator_for(schema)
    base.check_schema(schema)
    error = jsonschema.exceptions.best_match(_strict(base)(schema).iter_errors(instance))
    if error is not None:
        raise error
