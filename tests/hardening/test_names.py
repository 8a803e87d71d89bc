"""Finding 7 of #13: every name check takes the whole value.

Before: `^...$` checked with `match`/`search` (Django's RegexValidator, jsonschema's `pattern`)
let `cart\\n` and `node-1\\n` through to the Kubernetes API. Each check below is given a value it
accepts, then the same value with a newline or carriage return around it and with look-alike
characters from other scripts; every variant must be refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator, URLValidator

from k8s.names import FullMatchValidator


def variants(value: str) -> list[str]:
    """Ways to smuggle a character past a check that reads only a prefix, or ASCII-looking text."""
    look_alikes = {"a": "\u0430", "c": "\u0441", "e": "\u0435", "o": "\u043e", "p": "\u0440", "x": "\u0445",
                   "1": "\u0661", "0": "\u0660", "2": "\uff12", "-": "\u2010", "k": "\u212a"}
    out = [value + "\n", value + "\r", value + "\r\n", "\n" + value, value + "\n" + value, value + "\x00"]
    for plain, other in look_alikes.items():
        if plain in value:
            out.append(value.replace(plain, other, 1))
    return out


def refused(check: Callable[[str], Any]) -> Callable[[str], bool]:
    def is_refused(value: str) -> bool:
        try:
            result = check(value)
        except (ValidationError, ValueError, Exception):  # each check's own refusal
            return True
        return result is False or result is None

    return is_refused


# (model label, field name) -> a value the field's validator accepts.
MODEL_FIELDS = {
    ("k8s.Cluster", "name"): "prod-eu-1",
    ("agents.MCPServer", "name"): "kubernetes",
    ("agents.ModelAlias", "name"): "gpt-4o",
    ("agents.ModelAlias", "api_key_variable"): "OLLAMA_API_KEY",
    ("playbooks.Playbook", "name"): "restart-on-oom",
    ("playbooks.Rule", "name"): "crash-loop-2",
}


def _regex_validated_fields() -> dict[tuple[str, str], list[RegexValidator]]:
    found = {}
    for model in apps.get_models():
        for field in model._meta.get_fields():
            # URLValidator refuses \t, \r and \n itself (checked below); every other one must be ours.
            validators = [v for v in getattr(field, "validators", [])
                          if isinstance(v, RegexValidator) and not isinstance(v, URLValidator)]
            # Django's own fields (auth's username validator, ...) are theirs, not ours.
            if validators and model._meta.app_label in ("k8s", "agents", "playbooks", "channels"):
                found[(model._meta.label, field.name)] = validators
    return found


def test_every_regex_validator_of_ours_is_listed_here_and_takes_the_whole_value() -> None:
    fields = _regex_validated_fields()
    assert set(fields) == set(MODEL_FIELDS), "a model field with a regex validator must be listed in MODEL_FIELDS"
    for key, validators in fields.items():
        for validator in validators:
            assert isinstance(validator, FullMatchValidator), key
            validator(MODEL_FIELDS[key])  # accepted
            for bad in variants(MODEL_FIELDS[key]):
                with pytest.raises(ValidationError):
                    validator(bad)


def test_url_fields_refuse_newlines() -> None:
    validator = URLValidator()
    validator("https://models.example/v1")
    for bad in variants("https://models.example/v1")[:5]:
        with pytest.raises(ValidationError):
            validator(bad)


def _mcp_check(tool: str, arg: str, base: dict[str, Any]) -> Callable[[str], Any]:
    from k8s.mcp_server.server import check_arguments
    from k8s.mcp_server.tools import TOOL_SPECS

    spec = TOOL_SPECS[tool]
    return lambda value: check_arguments(spec, {**base, arg: value})


def _schema_check(tool: str, arg: str, base: dict[str, Any]) -> Callable[[str], Any]:
    """The agents side validates a tool's JSON Schema (ECMA `$`) before the gate and approvals."""
    from k8s.mcp_server.tools import TOOL_SPECS
    from k8s.names import validate_json

    spec = TOOL_SPECS[tool]
    return lambda value: validate_json({**base, arg: value}, spec.input_schema) or True


def _router_name(value: str) -> Any:
    from channels.router import _valid_name

    return _valid_name(value)


def _router_namespaced(value: str) -> Any:
    from channels.router import _namespaced

    return _namespaced(f"shop/{value}", "deployment", [])


def _address(kind: str) -> Callable[[str], Any]:
    from channels.models import validate_address

    return lambda value: validate_address(kind, value) or True


def _alert_label_name(value: str) -> Any:
    from playbooks.views import AlertSerializer

    serializer = AlertSerializer(data={"status": "firing", "labels": {"alertname": "A", value: "x"},
                                       "startsAt": "2026-11-23T14:55:00Z", "fingerprint": "0a"})
    return serializer.is_valid()


def _alert_fast_label_name(value: str) -> Any:
    from playbooks.views import _fast_alerts

    return _fast_alerts({"status": "firing", "alerts": [{"status": "firing", "labels": {"alertname": "A", value: "x"},
                                                         "startsAt": "2026-11-23T14:55:00Z", "fingerprint": "0a"}]})


def _alert_fingerprint(value: str) -> Any:
    """Accepted only if kept exactly as given (the serializer trims surrounding whitespace)."""
    from playbooks.views import AlertSerializer

    serializer = AlertSerializer(data={"status": "firing", "labels": {"alertname": "A"},
                                       "startsAt": "2026-11-23T14:55:00Z", "fingerprint": value})
    return serializer.is_valid() and serializer.validated_data["fingerprint"] == value


def _alert_workload(label: str) -> Callable[[str], Any]:
    from playbooks.services.alerts import alert_workload

    def check(value: str) -> Any:
        labels = {"namespace": "shop", "deployment": "web"} if label == "namespace" else {"namespace": "shop"}
        labels[label] = value
        return alert_workload(labels)

    return check


CHECKS: list[tuple[str, Callable[[str], Any], str]] = [
    ("is_dns1123_label", lambda v: __import__("k8s.names").names.is_dns1123_label(v), "cart"),
    ("is_dns1123_subdomain", lambda v: __import__("k8s.names").names.is_dns1123_subdomain(v), "node-1.example"),
    ("mcp scale_deployment name", _mcp_check("scale_deployment", "name", {"namespace": "shop", "replicas": 2}), "cart"),
    ("mcp scale_deployment namespace", _mcp_check("scale_deployment", "namespace", {"name": "cart", "replicas": 2}), "shop"),
    ("mcp cordon_node name", _mcp_check("cordon_node", "name", {}), "node-1"),
    ("mcp get_pod_logs container", _mcp_check("get_pod_logs", "container", {"namespace": "shop", "name": "p"}), "app"),
    ("mcp cluster", _mcp_check("list_nodes", "cluster", {}), "prod"),
    ("schema restart_deployment name", _schema_check("restart_deployment", "name", {"namespace": "shop"}), "cart"),
    ("schema drain_node name", _schema_check("drain_node", "name", {}), "node-1"),
    ("chat /k8s name", _router_name, "node-1"),
    ("chat /k8s namespace/name", _router_namespaced, "cart"),
    ("telegram chat address", _address("telegram"), "-1001234567890"),
    ("slack channel address", _address("slack"), "C0123456789"),
    ("discord channel address", _address("discord"), "123456789012345678"),
    ("alert label name (serializer)", _alert_label_name, "pod_name"),
    ("alert label name (fast path)", _alert_fast_label_name, "pod_name"),
    ("alert fingerprint", _alert_fingerprint, "0a1b2c"),
    ("alert deployment label", _alert_workload("deployment"), "cart"),
    ("alert namespace label", _alert_workload("namespace"), "shop"),
    ("alert node label", _alert_workload("node"), "node-1"),
]


@pytest.mark.parametrize(("name", "check", "good"), CHECKS, ids=[c[0] for c in CHECKS])
def test_a_name_check_refuses_newlines_and_look_alikes(name: str, check: Callable[[str], Any], good: str) -> None:
    is_refused = refused(check)
    assert not is_refused(good), f"{name} must accept {good!r}"
    accepted = [bad for bad in variants(good) if not is_refused(bad)]
    assert accepted == [], f"{name} accepted {accepted!r}"
