"""Rules and playbooks: full CRUD and YAML export/import, through the one validator of
`playbooks.yaml_io` (the YAML import's, which runs the admin forms' own checks), so the three
doors accept and refuse exactly the same things. An object's representation is its YAML export
snapshot: what the API returns, a file lists, and the audit log records before and after."""

from __future__ import annotations

import re
from typing import Any

from django.db import transaction
from django.db.models import ProtectedError
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, parsers, renderers, serializers, status
from rest_framework.response import Response

from api.models import Scope
from api.problems import Conflict, problem
from api.tokens import via
from api.views.base import ApiViewSet, CursorPage
from playbooks import yaml_io
from playbooks.models import Playbook, Rule

_LABEL = re.compile(r"^(?:(?:playbook|rule) (?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")|(?:playbooks|rules)\[\d+\]|\(top\))")


def nul_at(value: Any, path: str = "") -> str | None:
    """Where in a JSON value a NUL character is (PostgreSQL stores none, not even in jsonb), or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in str(key):
                return f"{path}.{key}".strip(".").replace("\x00", "\\0")
            found = nul_at(item, f"{path}.{key}".lstrip("."))
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_at(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def field_of(where: str) -> str:
    """`rule 'web'.priority` -> `priority`; `playbook 'p'.steps[1].tool` -> `steps[1].tool`."""
    return _LABEL.sub("", where, count=1).lstrip(".")


class StepSpec(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=["tool", "rca", "notify", "verify", "handoff"])
    tool = serializers.CharField(required=False)
    args = serializers.DictField(required=False)
    when = serializers.CharField(required=False, help_text="A CEL condition; absent: always.")
    on_failure = serializers.ChoiceField(choices=["stop", "continue"], required=False)
    timeout_seconds = serializers.IntegerField(required=False, min_value=1, max_value=86400)


class PlaybookSpec(serializers.Serializer):
    """As `playbooks export` writes it."""

    name = serializers.RegexField(r"^[a-z0-9][a-z0-9_-]{0,99}$")
    description = serializers.CharField(required=False, allow_blank=True)
    enabled = serializers.BooleanField(required=False)
    steps = StepSpec(many=True)


class RuleSpec(serializers.Serializer):
    """As `playbooks export` writes it."""

    name = serializers.RegexField(r"^[a-z0-9][a-z0-9_-]{0,99}$")
    description = serializers.CharField(required=False, allow_blank=True)
    enabled = serializers.BooleanField(required=False)
    priority = serializers.IntegerField(required=False)
    finding_types = serializers.ListField(child=serializers.CharField(), required=False)
    alert_names = serializers.ListField(child=serializers.CharField(), required=False)
    evidence = serializers.DictField(required=False)
    namespace_regex = serializers.CharField(required=False, allow_blank=True)
    label_selector = serializers.CharField(required=False, allow_blank=True)
    min_severity = serializers.ChoiceField(choices=["info", "warning", "critical"], required=False)
    clusters = serializers.ListField(child=serializers.CharField(), required=False)
    cooldown_seconds = serializers.IntegerField(required=False, min_value=0)
    playbook = serializers.CharField()
    approver_group = serializers.CharField(required=False, allow_null=True)
    approvers = serializers.ListField(child=serializers.CharField(), required=False)
    auto_run = serializers.BooleanField(required=False)
    escalate_after = serializers.IntegerField(required=False, min_value=1, max_value=100)
    escalation_window_seconds = serializers.IntegerField(required=False, min_value=60, max_value=30 * 86400)
    in_maintenance = serializers.ChoiceField(choices=["wait", "handoff"], required=False,
                                             help_text="A MEDIUM/HIGH step due during a maintenance window: wait or hand off.")


class NamePage(CursorPage):
    ordering = "name"


class _ConfigViewSet(ApiViewSet):
    """Shared by rules and playbooks: `kind` names the YAML section and the snapshot."""

    pagination_class = NamePage
    kind = ""
    model: Any = None
    lookup_field = "name"
    lookup_value_regex = "[A-Za-z0-9_.-]{1,100}"
    filter_backends: list[Any] = []
    scopes = {"list": Scope.READ, "retrieve": Scope.READ}

    @property
    def model_perms(self) -> dict[str, tuple[str, ...]]:  # type: ignore[override]
        name = self.model._meta.model_name
        return {"create": (f"playbooks.add_{name}",), "update": (f"playbooks.change_{name}",),
                "partial_update": (f"playbooks.change_{name}",), "destroy": (f"playbooks.delete_{name}",)}

    def snapshot(self, obj: Any) -> dict[str, Any]:
        raise NotImplementedError

    def get_queryset(self) -> Any:
        return self.model.objects.order_by("name")

    def _find(self, name: str) -> Any:
        obj = self.get_queryset().filter(name=name).first()
        if obj is None:
            raise Http404(f"no {self.kind} named {name!r}")
        return obj

    def list(self, request: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([self.snapshot(obj) for obj in page or []])

    def retrieve(self, request: Any, name: str) -> Response:
        return Response(self.snapshot(self._find(name)))

    def _save(self, request: Any, spec: Any, *, created: bool) -> Response:
        if not isinstance(spec, dict):
            raise exceptions.ValidationError({"": [f"the body must be a {self.kind} (a JSON object)"]})
        nul = nul_at(spec)
        if nul is not None:
            raise exceptions.ValidationError({nul: ["holds a NUL character, which cannot be stored"]})
        checker = yaml_io.Checker()
        with transaction.atomic():
            playbooks, rules, _errors = yaml_io.validate(yaml_io.located({f"{self.kind}s": [spec]}), checker)
            if checker.problems:
                raise exceptions.ValidationError({field_of(where) or "": [message]
                                                  for _line, where, message in checker.problems})
            yaml_io.apply(playbooks, rules, actor=f"{via(request)}:{request.user.get_username()}", via="api")
            obj = self._find(spec["name"])
        return Response(self.snapshot(obj), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    def create(self, request: Any) -> Response:
        spec = request.data
        if isinstance(spec, dict) and isinstance(spec.get("name"), str) and self.model.objects.filter(
                name=spec["name"]).exists():
            raise Conflict(f"a {self.kind} named {spec['name']!r} exists; change it with PUT or PATCH")
        return self._save(request, spec, created=True)

    def update(self, request: Any, name: str) -> Response:
        self._find(name)
        spec = request.data
        if isinstance(spec, dict):
            if spec.setdefault("name", name) != name:
                raise exceptions.ValidationError({"name": [f"the name cannot change here ({name!r} in the URL)"]})
        return self._save(request, spec, created=False)

    def partial_update(self, request: Any, name: str) -> Response:
        current = self.snapshot(self._find(name))
        if not isinstance(request.data, dict):
            raise exceptions.ValidationError({"": [f"the body must be part of a {self.kind} (a JSON object)"]})
        if request.data.get("name", name) != name:
            raise exceptions.ValidationError({"name": [f"the name cannot change here ({name!r} in the URL)"]})
        return self._save(request, {**current, **request.data}, created=False)

    def destroy(self, request: Any, name: str) -> Response:
        obj = self._find(name)
        before = self.snapshot(obj)
        try:
            with transaction.atomic():
                obj.delete()
                yaml_io.audit_change(f"{via(request)}:{request.user.get_username()}", self.kind, name, "deleted",
                                     before=before, after=None, via="api")
        except ProtectedError:
            users = ", ".join(sorted(r.name for r in Rule.objects.filter(playbook=obj)))
            raise Conflict(f"{self.kind} {name!r} is used by rules: {users}") from None
        return Response(status=status.HTTP_204_NO_CONTENT)


def _crud_schema(spec: type[serializers.Serializer], what: str) -> dict[str, Any]:
    return {
        "list": extend_schema(responses=spec(many=True), summary=f"{what.capitalize()}s, by name"),
        "retrieve": extend_schema(responses=spec, summary=f"One {what}"),
        "create": extend_schema(request=spec, responses={201: spec}, summary=f"Create a {what}"),
        "update": extend_schema(request=spec, responses=spec, summary=f"Replace a {what}"),
        "partial_update": extend_schema(request=spec, responses=spec, summary=f"Change some fields of a {what}"),
        "destroy": extend_schema(responses={204: None}, summary=f"Delete a {what}"),
    }


@extend_schema_view(**_crud_schema(PlaybookSpec, "playbook"))
class PlaybookViewSet(_ConfigViewSet):
    """Playbooks with their steps in order (a PUT replaces the steps)."""

    kind = "playbook"
    model = Playbook
    serializer_class = PlaybookSpec

    def snapshot(self, obj: Any) -> dict[str, Any]:
        return yaml_io.playbook_snapshot(obj)


@extend_schema_view(**_crud_schema(RuleSpec, "rule"))
class RuleViewSet(_ConfigViewSet):
    """Rules: which incidents get which playbook, and who approves its steps."""

    kind = "rule"
    model = Rule
    serializer_class = RuleSpec

    def get_queryset(self) -> Any:
        return Rule.objects.select_related("playbook", "approver_group").prefetch_related(
            "clusters", "approvers").order_by("name")

    def snapshot(self, obj: Any) -> dict[str, Any]:
        return yaml_io.rule_snapshot(obj)


# --- YAML export and import -----------------------------------------------------------------


class YAMLRenderer(renderers.BaseRenderer):
    media_type = "application/yaml"
    format = "yaml"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if isinstance(data, str):
            return data.encode()
        # An error's problem detail (sent as application/problem+json): JSON, which is also YAML.
        return renderers.JSONRenderer().render(data)


class YAMLParser(parsers.BaseParser):
    """The body as text, parsed (with line numbers) by the import itself."""

    media_type = "application/yaml"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> str:
        raw = stream.read()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise exceptions.ParseError(f"the body is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


class TextYAMLParser(YAMLParser):
    media_type = "text/yaml"


class ExportDocument(serializers.Serializer):
    playbooks = PlaybookSpec(many=True)
    rules = RuleSpec(many=True)


class ImportResult(serializers.Serializer):
    created = serializers.ListField(child=serializers.CharField())
    updated = serializers.ListField(child=serializers.CharField())
    unchanged = serializers.ListField(child=serializers.CharField())
    deleted = serializers.ListField(child=serializers.CharField())
    dry_run = serializers.BooleanField()


_LINE = re.compile(r"^line (\d+|\?)(?:, column \d+)?: (.*)$", re.DOTALL)


def _import_errors(errors: list[str]) -> list[dict[str, Any]]:
    found = []
    for text in errors:
        match = _LINE.match(text)
        item: dict[str, Any] = {"field": "", "message": text}
        if match:
            item["message"] = match.group(2)
            if match.group(1).isdigit():
                item["line"] = int(match.group(1))
        found.append(item)
    return found


class ConfigViewSet(ApiViewSet):
    """Every rule and playbook as one YAML file, for GitOps (`manage.py playbooks export` / `import`)."""

    filter_backends: list[Any] = []
    pagination_class = None
    parser_classes = [YAMLParser, TextYAMLParser]  # only `load` takes a body: the file
    scopes = {"export": Scope.READ, "load": Scope.WRITE}
    model_perms = {"load": ("playbooks.add_playbook", "playbooks.change_playbook", "playbooks.add_rule",
                            "playbooks.change_rule")}

    @extend_schema(responses={(200, "application/yaml"): OpenApiResponse(ExportDocument, description="The file.")})
    def export(self, request: Any) -> Response:
        """Every playbook (steps in order) and rule, sorted by name, as `manage.py playbooks export` writes it."""
        return Response(yaml_io.export_yaml(), content_type="application/yaml; charset=utf-8")

    @extend_schema(
        request={"application/yaml": OpenApiTypes.STR},
        parameters=[OpenApiParameter("prune", bool, description="Also delete rules and playbooks the file does not name."),
                    OpenApiParameter("dry_run", bool, description="Validate and report; write nothing.")],
        responses=ImportResult,
    )
    def load(self, request: Any) -> Response:
        """Validate the whole file (every problem reported with its line), then apply it in one
        transaction, or nothing at all. Objects are matched by name."""
        flags = {}
        for flag in ("prune", "dry_run"):
            value = request.query_params.get(flag, "false").lower()
            if value not in ("true", "false", "1", "0"):
                raise exceptions.ValidationError({flag: [f"must be true or false, not {value[:50]!r}"]})
            flags[flag] = value in ("true", "1")
        if flags["prune"] and not all(request.user.has_perm(p) for p in ("playbooks.delete_rule",
                                                                          "playbooks.delete_playbook")):
            raise exceptions.PermissionDenied(f"{request.user.get_username()} lacks the permission to delete rules "
                                              "and playbooks (prune)")
        text = request.data if isinstance(request.data, str) else ""
        if "\x00" in text:
            raise exceptions.ValidationError({"": ["the file holds a NUL character"]})
        try:
            changes = yaml_io.import_yaml(text, actor=f"{via(request)}:{request.user.get_username()}",
                                          prune=flags["prune"], dry_run=flags["dry_run"])
        except yaml_io.ImportFailed as failed:
            errors = _import_errors(failed.errors)
            return problem(400, f"the file was not applied: {len(errors)} problem(s); first: "
                           f"{failed.errors[0] if failed.errors else '?'}", errors=errors)
        return Response({**changes, "dry_run": flags["dry_run"]})

    def get_renderers(self) -> list[Any]:
        if getattr(self, "action", None) == "export":
            return [YAMLRenderer()]
        return super().get_renderers()
