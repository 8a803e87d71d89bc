"""OpenAPI v2 and v3 documents for the kinds the sandbox serves, and strict field validation.

The schemas are generated from the `kubernetes` Python client's models (its pydantic classes
carry each field's JSON name, type, description and whether it is required; the client is
itself generated from the API server's OpenAPI), so no kind's schema is written by hand. Two
things the client's models do not keep: a nested type's API group (named here after the first
served kind that reaches it, core kinds first) and the int-or-string / quantity formats (an
`object` or `string` here).

kubectl 1.32 reads `/openapi/v3` (JSON) for `explain` and, before `create -f` / `apply -f`,
to learn whether the server validates fields itself (`fieldValidation` on the kind's PATCH
operation); it then sends `fieldValidation=Strict` and the server refuses unknown fields. It
asks `/openapi/v2` only when v3 fails, and then only as protobuf, which the sandbox does not
write: that request is answered 406 and a JSON one is served.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
from typing import Any

import orjson
from kubernetes.client import models

from k8s.sandbox.resources import RESOURCES, Resource, group_versions

Schema = dict[str, Any]

META = {"ObjectMeta", "ListMeta", "LabelSelector", "LabelSelectorRequirement", "OwnerReference", "ManagedFieldsEntry",
        "Status", "StatusDetails", "StatusCause", "Condition", "DeleteOptions", "Preconditions"}
_CLASS_RE = re.compile(r"^([A-Z][a-z]+)?(V\d+(?:alpha\d+|beta\d+)?)([A-Z]\w*)$")
_LIST_RE = re.compile(r"^List\[(.+)\]$")
_DICT_RE = re.compile(r"^Dict\[str, (.+)\]$")
_SCALARS: dict[str, Schema] = {
    "str": {"type": "string"}, "int": {"type": "integer", "format": "int64"}, "bool": {"type": "boolean"},
    "float": {"type": "number", "format": "double"}, "datetime": {"type": "string", "format": "date-time"},
    "bytes": {"type": "string", "format": "byte"}, "object": {},
}
PATCH_MEDIA_TYPES = ("application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json",
                     "application/strategic-merge-patch+json")
# kube-apiserver's v2 document is served as protobuf to a client that asks only for that (kubectl's
# fallback does); the sandbox writes JSON only.
V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


def model_class(resource: Resource) -> type | None:
    """The client's model class of a served kind (CoreV1Event for core/v1 Event)."""
    version = resource.version.upper()
    for name in (f"{version}{resource.kind}", f"Core{version}{resource.kind}" if not resource.group else ""):
        cls = getattr(models, name, None)
        if cls is not None and hasattr(cls, "openapi_types"):
            return cls
    return None


def _list_class(resource: Resource) -> type | None:
    cls = model_class(resource)
    return getattr(models, f"{cls.__name__}List", None) if cls is not None else None


class _Catalog:
    """Every model class reachable from the served kinds, with its schema name."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}  # class name -> schema name
        self.gvk: dict[str, tuple[str, str, str]] = {}  # class name -> (group, version, kind) of a top-level kind
        core = [r for r in RESOURCES if not r.group]
        seeds: list[tuple[type, Resource | None, str]] = []
        for resource in core + [r for r in RESOURCES if r.group]:
            for cls in (model_class(resource), _list_class(resource)):
                if cls is not None:
                    seeds.append((cls, resource, resource.group))
            if resource is core[-1]:
                # PodTemplateSpec and its kin are core types even though only apps/batch kinds embed them here.
                seeds.append((models.V1PodTemplate, None, ""))
        for cls, resource, group in seeds:
            if resource is not None:
                kind = resource.kind if cls is model_class(resource) else resource.list_kind
                self.gvk[cls.__name__] = (resource.group, resource.version, kind)
            self._walk(cls, group)

    def _walk(self, cls: type, group: str) -> None:
        stack = [cls]
        while stack:
            current = stack.pop()
            if current.__name__ in self.names:
                continue
            self.names[current.__name__] = _schema_name(current.__name__, group)
            for type_name in current.openapi_types.values():  # type: ignore[attr-defined]
                inner = _innermost(type_name)
                nested = getattr(models, inner, None)
                if nested is not None and hasattr(nested, "openapi_types") and inner not in self.names:
                    stack.append(nested)

    def schemas(self, v3: bool) -> dict[str, Schema]:
        out: dict[str, Schema] = {}
        for class_name, schema_name in self.names.items():
            cls = getattr(models, class_name)
            schema: Schema = {"description": _class_description(cls), "type": "object", "properties": {}}
            required = []
            for attr, type_name in cls.openapi_types.items():
                json_name = cls.attribute_map[attr]
                field = cls.model_fields.get(attr)
                prop = self._property(type_name, v3)
                # A field of a model type carries no description in the client; its type's is the next best.
                nested = getattr(models, _innermost(type_name), None)
                description = (field.description if field is not None else None) or (
                    _class_description(nested) if nested is not None and hasattr(nested, "openapi_types") else "")
                if description:
                    prop = {"description": description, **prop}
                schema["properties"][json_name] = prop
                if field is not None and field.is_required():
                    required.append(json_name)
            if required:
                schema["required"] = required
            if class_name in self.gvk:
                group, version, kind = self.gvk[class_name]
                schema["x-kubernetes-group-version-kind"] = [{"group": group, "kind": kind, "version": version}]
            out[schema_name] = schema
        return out

    def _property(self, type_name: str, v3: bool) -> Schema:
        if type_name in _SCALARS:
            return dict(_SCALARS[type_name])
        if m := _LIST_RE.match(type_name):
            return {"type": "array", "items": self._property(m.group(1), v3)}
        if m := _DICT_RE.match(type_name):
            return {"type": "object", "additionalProperties": self._property(m.group(1), v3)}
        name = self.names.get(type_name)
        if name is None:
            return {}
        return {"allOf": [{"$ref": f"#/components/schemas/{name}"}]} if v3 else {"$ref": f"#/definitions/{name}"}

    def ref(self, cls: type | None, v3: bool) -> Schema:
        if cls is None:
            return {}
        name = self.names[cls.__name__]
        return {"$ref": f"#/components/schemas/{name}" if v3 else f"#/definitions/{name}"}


def _innermost(type_name: str) -> str:
    while m := (_LIST_RE.match(type_name) or _DICT_RE.match(type_name)):
        type_name = m.group(1)
    return type_name


def _schema_name(class_name: str, group: str) -> str:
    m = _CLASS_RE.match(class_name)
    if not m:
        return class_name
    prefix, version, kind = m.group(1), m.group(2).lower(), m.group(3)
    if kind in META:
        return f"io.k8s.apimachinery.pkg.apis.meta.{version}.{kind}"
    package = prefix.lower() if prefix else (group.split(".")[0] if group else "core")
    return f"io.k8s.api.{package}.{version}.{kind}"


def _class_description(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.split("\n\n")[0].replace("\n", " ").strip()


@functools.cache
def _catalog() -> _Catalog:
    return _Catalog()


# --- paths ---------------------------------------------------------------------------------
def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _query(name: str, description: str, schema_type: str = "string") -> Schema:
    return {"name": name, "in": "query", "description": description, "schema": {"type": schema_type, "uniqueItems": True}}


_DRY_RUN = _query("dryRun", "When present, indicates that modifications should not be persisted. Valid value: All")
_FIELD_MANAGER = _query("fieldManager", "a name associated with the actor or entity that is making these changes")
_FIELD_VALIDATION = _query(
    "fieldValidation", "How the server treats fields it does not know in the request: Ignore, Warn (the default) or "
    "Strict (the request fails with a BadRequest error naming the unknown fields)")
_FORCE = _query("force", "Force is going to \"force\" Apply requests: re-acquire conflicting fields owned by other people.",
                "boolean")
_LIST_PARAMS = [_query(n, d) for n, d in (
    ("labelSelector", "A selector to restrict the list of returned objects by their labels."),
    ("fieldSelector", "A selector to restrict the list of returned objects by their fields."),
    ("continue", "The continue option should be set when retrieving more results from the server."),
    ("resourceVersion", "Where the list or watch starts."))] + [
    _query("limit", "The maximum number of responses to return for a list call.", "integer"),
    _query("watch", "Watch for changes to the described resources.", "boolean")]


def _operation(resource: Resource, action: str, verb: str, response: Schema, params: list[Schema], v3: bool,
               body: Schema | None = None, media_types: tuple[str, ...] = ("application/json",)) -> Schema:
    scope = "Namespaced" if resource.namespaced and action not in ("list-all",) else ""
    op_id = f"{verb}{scope}{resource.kind}" + ("ForAllNamespaces" if action == "list-all" else "")
    gvk = {"group": resource.group, "version": resource.version, "kind": resource.kind}
    op: Schema = {
        "operationId": op_id, "tags": [_gv_path(resource.group, resource.version).replace("/", "_")],
        "x-kubernetes-action": "list" if action == "list-all" else action, "x-kubernetes-group-version-kind": gvk,
    }
    if v3:
        op["parameters"] = params
        op["responses"] = {"200": {"description": "OK", "content": {"application/json": {"schema": response}}}}
        if body is not None:
            op["requestBody"] = {"required": True, "content": {t: {"schema": body} for t in media_types}}
    else:
        op["parameters"] = [{k: v for k, v in p.items() if k != "schema"} | {"type": p["schema"]["type"]} for p in params]
        if body is not None:
            op["parameters"].append({"name": "body", "in": "body", "required": True, "schema": body})
        op["consumes"] = list(media_types)
        op["produces"] = ["application/json"]
        op["responses"] = {"200": {"description": "OK", "schema": response}}
    return op


def _paths(group: str, version: str, v3: bool) -> dict[str, Schema]:
    catalog = _catalog()
    out: dict[str, Schema] = {}
    prefix = "/" + _gv_path(group, version)
    for resource in RESOURCES:
        if (resource.group, resource.version) != (group, version):
            continue
        cls = model_class(resource)
        if cls is None:
            continue
        one, many = catalog.ref(cls, v3), catalog.ref(_list_class(resource), v3)
        base = f"{prefix}/namespaces/{{namespace}}/{resource.plural}" if resource.namespaced else f"{prefix}/{resource.plural}"
        ns_param = [{"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}] if resource.namespaced else []
        name_param = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
        if not v3:
            ns_param = [{k: v for k, v in p.items() if k != "schema"} | {"type": "string"} for p in ns_param]
            name_param = [{k: v for k, v in p.items() if k != "schema"} | {"type": "string"} for p in name_param]
        writes = [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION]
        if "list" not in resource.verbs:  # an access review: create only
            out[base] = {"parameters": ns_param, "post": _operation(resource, "post", "create", one, writes, v3, one)}
            continue
        out[base] = {"parameters": ns_param,
                     "get": _operation(resource, "list", "list", many, _LIST_PARAMS, v3),
                     "post": _operation(resource, "post", "create", one, writes, v3, one)}
        out[f"{base}/{{name}}"] = {
            "parameters": ns_param + name_param,
            "get": _operation(resource, "get", "read", one, [], v3),
            "put": _operation(resource, "put", "replace", one, writes, v3, one),
            "patch": _operation(resource, "patch", "patch", one, [*writes, _FORCE], v3, {"type": "object"}, PATCH_MEDIA_TYPES),
            "delete": _operation(resource, "delete", "delete", {}, [_DRY_RUN], v3),
        }
        if resource.namespaced:
            out[f"{prefix}/{resource.plural}"] = {"get": _operation(resource, "list-all", "list", many, _LIST_PARAMS, v3)}
    return out


def _reachable(schemas: dict[str, Schema], roots: list[str]) -> dict[str, Schema]:
    keep: dict[str, Schema] = {}
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in keep or name not in schemas:
            continue
        keep[name] = schemas[name]
        stack.extend(m.split("/")[-1] for m in re.findall(r'"\$ref":"([^"]+)"', orjson.dumps(schemas[name]).decode()))
    return dict(sorted(keep.items()))


# --- documents -----------------------------------------------------------------------------
@functools.cache
def v3_document(gv_path: str) -> bytes | None:
    """The OpenAPI v3 document of one group version ("api/v1", "apis/apps/v1"), or None."""
    for group, versions in group_versions().items():
        for version in versions:
            if _gv_path(group, version) != gv_path:
                continue
            catalog = _catalog()
            roots = [catalog.names[c.__name__] for r in RESOURCES if (r.group, r.version) == (group, version)
                     for c in (model_class(r), _list_class(r)) if c is not None]
            schemas = _reachable(catalog.schemas(v3=True), roots)
            return orjson.dumps({
                "openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.4-sandbox"},
                "paths": _paths(group, version, v3=True), "components": {"schemas": schemas},
            })
    return None


@functools.cache
def v3_index() -> bytes:
    paths = {}
    for group, versions in group_versions().items():
        for version in versions:
            path = _gv_path(group, version)
            document = v3_document(path)
            if document is not None:
                digest = hashlib.sha512(document).hexdigest().upper()
                paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return orjson.dumps({"paths": paths})


@functools.cache
def v2_document() -> bytes:
    paths: dict[str, Schema] = {}
    for group, versions in group_versions().items():
        for version in versions:
            paths.update(_paths(group, version, v3=False))
    return orjson.dumps({
        "swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.32.4-sandbox"},
        "paths": paths, "definitions": dict(sorted(_catalog().schemas(v3=False).items())),
    })


# --- strict field validation ---------------------------------------------------------------
def unknown_fields(resource: Resource, obj: Any) -> list[str]:
    """The paths of fields in `obj` that the kind's schema does not declare ("spec.foo",
    "spec.template.spec.containers[0].bar"), as the API server's strict decoding names them."""
    cls = model_class(resource)
    out: list[str] = []
    if cls is not None:
        _check(cls.__name__, obj, "", out, skip=("apiVersion", "kind"))
    return out


def _check(type_name: str, value: Any, path: str, out: list[str], skip: tuple[str, ...] = ()) -> None:
    if m := _LIST_RE.match(type_name):
        if isinstance(value, list):
            for i, item in enumerate(value):
                _check(m.group(1), item, f"{path}[{i}]", out)
        return
    if m := _DICT_RE.match(type_name):
        if isinstance(value, dict):
            for key, item in value.items():
                _check(m.group(1), item, f"{path}.{key}", out)
        return
    cls = getattr(models, type_name, None)
    if cls is None or not hasattr(cls, "attribute_map") or not isinstance(value, dict):
        return
    fields = _json_fields(cls)
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key in skip:
            continue
        if key not in fields:
            out.append(where)
        else:
            _check(fields[key], item, where, out)


@functools.cache
def _json_fields(cls: type) -> dict[str, str]:
    return {cls.attribute_map[attr]: type_name for attr, type_name in cls.openapi_types.items()}  # type: ignore[attr-defined]
