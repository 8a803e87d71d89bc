"""Writes through the API: create, patch, replace, the scale subresource, delete and eviction.

Mixed into `Api` (which owns the simulation and the routing); each write validates like the
API server, stores under the simulation's lock and runs the controllers once.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson
import structlog
import yaml

from k8s.sandbox import apply as managed_fields
from k8s.sandbox import openapi, validation
from k8s.sandbox import patch as patching
from k8s.sandbox.errors import ApiError
from k8s.sandbox.kubelet import is_active, is_pod_ready
from k8s.sandbox.resources import BY_PLURAL, RESOURCES, Resource
from k8s.sandbox.store import Obj, copy, now_iso, selector_matches
from k8s.sandbox.wire import Request, Response, json_response

if TYPE_CHECKING:
    from k8s.sandbox.simulation import Simulation

log = structlog.get_logger(__name__)

PATCH_TYPES = (patching.JSON_PATCH, patching.MERGE_PATCH, patching.STRATEGIC_MERGE_PATCH, patching.APPLY_PATCH)
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class Writes:
    sim: Simulation

    # --- create ----------------------------------------------------------------------------
    def _create(self, r: Request, resource: Resource, namespace: str, body: Any = None) -> Response:
        body = r.json() if body is None else body
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request must be a JSON object")
        meta = body.setdefault("metadata", {})
        if body.get("kind") not in (None, resource.kind) or body.get("apiVersion") not in (None, resource.api_version):
            raise ApiError.bad_request(f"the API version in the data ({body.get('apiVersion')}) does not match the expected API version ({resource.api_version})")
        body["kind"], body["apiVersion"] = resource.kind, resource.api_version
        warnings = self._field_validation(r, resource, body)
        with self.sim.lock:
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + self.sim.suffix()
            name = meta.get("name", "")
            if not name:
                raise ApiError.invalid(resource, "", [("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")])
            if not NAME_RE.match(name) or len(name) > 253:
                raise ApiError.invalid(resource, name, [("metadata.name", "FieldValueInvalid",
                    f"Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'")])
            if resource.namespaced:
                if meta.get("namespace") not in (None, namespace):
                    raise ApiError.bad_request("the namespace of the provided object does not match the namespace sent on the request")
                meta["namespace"] = namespace
                if self.sim.store.get("namespaces", "", namespace) is None:
                    raise ApiError.not_found(BY_PLURAL["namespaces"], namespace)
            else:
                meta.pop("namespace", None)
            for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "generation"):
                meta.pop(key, None)
            if r.media_type != patching.APPLY_PATCH:
                meta.pop("managedFields", None)
            if "managedFields" not in meta:  # a server-side apply's create carries its Apply entry
                managed_fields.record_update(resource, None, body, _manager(r))
            validation.defaults(resource, body)
            validation.normalize(resource, body)
            validation.validate(resource, body)
            if r.query.get("dryRun") == "All":
                if self.sim.store.get(resource.plural, namespace if resource.namespaced else "", name) is not None:
                    raise ApiError.already_exists(resource, name)
                return _warn(json_response(201, body), warnings)
            created = self.sim.store.create(resource.plural, body)
            self.sim.reconcile()
        log.info("sandbox.created", resource=resource.plural, namespace=namespace, name=name)
        return _warn(json_response(201, created), warnings)

    @staticmethod
    def _field_validation(r: Request, resource: Resource, obj: Obj) -> list[str]:
        """Fields the kind does not declare: refused under `fieldValidation=Strict` (what kubectl sends
        once the OpenAPI document says the server validates), warned about under Warn, the default."""
        mode = r.query.get("fieldValidation") or "Warn"
        if mode not in ("Ignore", "Warn", "Strict"):
            raise ApiError.bad_request(f'fieldValidation: Invalid value: "{mode}": must be one of Ignore, Warn, Strict')
        if mode == "Ignore":
            return []
        unknown = [f'unknown field "{path}"' for path in openapi.unknown_fields(resource, obj)]
        if unknown and mode == "Strict":
            raise ApiError.bad_request(f'{resource.kind} in version "{resource.version}" cannot be handled as a {resource.kind}: '
                                       f"strict decoding error: {', '.join(unknown)}")
        return unknown

    # --- patch / replace -------------------------------------------------------------------
    def _apply_patch(self, r: Request, resource: Resource, current: Obj) -> Obj:
        content_type = r.media_type  # one of PATCH_TYPES: `_route` answered 415 to any other
        try:
            body = orjson.loads(r.body or b"")
        except orjson.JSONDecodeError as exc:
            raise ApiError.bad_request(f"error decoding patch: {exc}") from None
        try:
            if content_type == patching.JSON_PATCH:
                return patching.json_patch(copy(current), body)
            if not isinstance(body, dict):
                raise ApiError.bad_request("error decoding patch: json: cannot unmarshal array into Go value of type map[string]interface {}")
            if content_type == patching.MERGE_PATCH:
                return patching.merge_patch(copy(current), body)
            if content_type == patching.STRATEGIC_MERGE_PATCH:
                return patching.strategic_merge_patch(copy(current), body)
        except patching.PatchDecodeError as exc:
            raise ApiError.bad_request(f"error decoding patch: {exc}") from None
        except patching.PatchError as exc:
            raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {exc}") from None
        raise ApiError.unsupported_media_type(content_type, PATCH_TYPES)

    def _patch(self, r: Request, resource: Resource, ns: str, name: str, sub: str | None) -> Response:
        if r.media_type == patching.APPLY_PATCH:
            return self._server_side_apply(r, resource, ns, name, sub)
        with self.sim.lock:
            current = self.sim.store.require(resource, ns, name)
            patched = self._apply_patch(r, resource, current)
            return self._write(r, resource, current, patched, sub)

    def _server_side_apply(self, r: Request, resource: Resource, ns: str, name: str, sub: str | None) -> Response:
        manager = r.query.get("fieldManager", "")
        if not manager:
            raise ApiError.invalid_options("fieldManager", "Required value: is required for apply patch")
        if len(manager) > 128:
            raise ApiError.invalid_options("fieldManager", "Too long: may not be more than 128 bytes")
        if sub is not None:
            raise ApiError.bad_request(f"the sandbox does not apply to the {sub} subresource; apply to the object itself")
        force = r.query.get("force", "").lower()
        if force not in ("", "true", "false"):
            raise ApiError.bad_request(f'force: Invalid value: "{r.query["force"]}": must be true or false')
        try:
            config = yaml.safe_load(r.body or b"")
        except yaml.YAMLError as exc:
            raise ApiError.bad_request(f"error decoding YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(config, dict):
            raise ApiError.bad_request("the body of an apply patch must be an object (YAML or JSON)")
        for key, want in (("apiVersion", resource.api_version), ("kind", resource.kind)):
            if config.get(key) != want:
                raise ApiError.bad_request(f"{key} must be {want!r} in an apply patch to {resource.plural} (got {config.get(key)!r})")
        meta = config.get("metadata")
        if not isinstance(meta, dict) or meta.get("name", name) != name:
            raise ApiError.bad_request(f"metadata.name must be {name!r}, the name in the URL")
        meta["name"] = name
        with self.sim.lock:
            current = self.sim.store.get(resource.plural, ns if resource.namespaced else "", name)
            applied = managed_fields.apply(resource, current, orjson.loads(orjson.dumps(config)), manager, force=force == "true")
            if current is None:
                return self._create(r, resource, ns, applied)
            return self._write(r, resource, current, applied, None)

    def _replace(self, r: Request, resource: Resource, ns: str, name: str, sub: str | None) -> Response:
        body = r.json()
        with self.sim.lock:
            current = self.sim.store.require(resource, ns, name)
            if not isinstance(body, dict):
                raise ApiError.bad_request("the body of the request must be a JSON object")
            body.setdefault("metadata", {})
            if body["metadata"].get("name", name) != name:
                raise ApiError.bad_request(f"the name of the object ({body['metadata'].get('name')}) does not match the name on the URL ({name})")
            return self._write(r, resource, current, body, sub)

    def _write(self, r: Request, resource: Resource, current: Obj, new: Obj, sub: str | None) -> Response:
        name = current["metadata"]["name"]
        if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
            raise ApiError.invalid(resource, name, [("metadata", "FieldValueRequired", "Required value")])
        wanted_rv = new["metadata"].get("resourceVersion")
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            what = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {what} "{name}": the object has been modified; '
                           "please apply your changes to the latest version and try again",
                           {"name": name, "group": resource.group, "kind": resource.plural})
        for key in ("name", "namespace"):
            if new["metadata"].get(key, current["metadata"].get(key)) != current["metadata"].get(key):
                raise ApiError.invalid(resource, name, [(f"metadata.{key}", "FieldValueInvalid", "field is immutable")])
        # Fields the server owns are never taken from the client.
        for key in ("uid", "creationTimestamp", "generation", "resourceVersion", "ownerReferences"):
            if key in current["metadata"]:
                new["metadata"][key] = current["metadata"][key]
            elif key != "ownerReferences":
                new["metadata"].pop(key, None)
        new["kind"], new["apiVersion"] = resource.kind, resource.api_version
        warnings = self._field_validation(r, resource, new)
        if r.media_type != patching.APPLY_PATCH:
            new["metadata"]["managedFields"] = current["metadata"].get("managedFields") or []
        if sub == "status":
            merged = copy(current)
            merged["status"] = new.get("status") or {}
            new = merged
        elif "status" in current:
            new["status"] = current["status"]
        if resource.plural == "pods":
            validation.check_pod_update(resource, current, new)
        validation.normalize(resource, new)
        validation.validate(resource, new)
        if r.media_type != patching.APPLY_PATCH:
            managed_fields.record_update(resource, current, new, _manager(r), sub or "")
        if not new["metadata"].get("managedFields"):
            new["metadata"].pop("managedFields", None)
        if r.query.get("dryRun") == "All":
            return _warn(json_response(200, new), warnings)
        stored = self.sim.store.put(resource.plural, new)
        self.sim.reconcile()
        log.info("sandbox.updated", resource=resource.plural, namespace=current["metadata"].get("namespace", ""), name=name)
        return _warn(json_response(200, stored), warnings)


    # --- scale subresource -----------------------------------------------------------------
    def _scale_of(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        selector = ",".join(f"{k}={v}" for k, v in (obj["spec"]["selector"].get("matchLabels") or {}).items())
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta},
                "spec": {"replicas": obj["spec"].get("replicas", 1)},
                "status": {"replicas": (obj.get("status") or {}).get("replicas", 0), "selector": selector}}

    def _scale(self, r: Request, resource: Resource, ns: str, name: str) -> Response:
        with self.sim.lock:
            current = self.sim.store.require(resource, ns, name)
            scale = self._scale_of(current)
            if r.method == "GET":
                return json_response(200, scale)
            if r.method == "PATCH":
                new_scale = self._apply_patch(r, resource, scale)
            elif r.method == "PUT":
                new_scale = r.json()
            else:
                raise ApiError.method_not_allowed()
            replicas = (new_scale.get("spec") or {}).get("replicas") if isinstance(new_scale, dict) else None
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise ApiError(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                               f"{orjson.dumps(replicas).decode()}: must be greater than or equal to 0",
                               {"name": name, "group": "autoscaling", "kind": "Scale", "causes": [
                                   {"reason": "FieldValueInvalid", "message": "must be greater than or equal to 0", "field": "spec.replicas"}]})
            wanted_rv = (new_scale.get("metadata") or {}).get("resourceVersion")
            if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {resource.plural}.{resource.group} "{name}": '
                               "the object has been modified; please apply your changes to the latest version and try again")
            if r.query.get("dryRun") == "All":
                return json_response(200, {**scale, "spec": {"replicas": replicas}})
            updated = copy(current)
            updated["spec"]["replicas"] = replicas
            managed_fields.record_update(resource, current, updated, _manager(r), "scale")
            stored = self.sim.store.put(resource.plural, updated)
            self.sim.reconcile()
            log.info("sandbox.scaled", resource=resource.plural, namespace=ns, name=name, replicas=replicas)
            return json_response(200, self._scale_of(stored))

    # --- delete ----------------------------------------------------------------------------
    def _delete(self, r: Request, resource: Resource, ns: str, name: str) -> Response:
        options = r.json() if r.body else {}
        with self.sim.lock:
            current = self.sim.store.require(resource, ns, name)
            pre = (options.get("preconditions") or {}) if isinstance(options, dict) else {}
            if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
                what = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {what} "{name}": Precondition failed: '
                               f"UID in precondition: {pre['uid']}, UID in object meta: {current['metadata']['uid']}")
            gone = copy(current)
            gone["metadata"]["deletionTimestamp"] = now_iso()
            gone["metadata"]["deletionGracePeriodSeconds"] = 0 if resource.plural == "pods" else None
            if gone["metadata"]["deletionGracePeriodSeconds"] is None:
                del gone["metadata"]["deletionGracePeriodSeconds"]
            if r.query.get("dryRun") == "All":
                return json_response(200, gone)
            self._delete_tree(resource, current)
            self.sim.reconcile()
        log.info("sandbox.deleted", resource=resource.plural, namespace=ns, name=name)
        if resource.plural == "pods":
            return json_response(200, gone)
        return json_response(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                   "details": {"name": name, "group": resource.group, "kind": resource.plural,
                                               "uid": current["metadata"]["uid"]}})

    def _delete_tree(self, resource: Resource, obj: Obj) -> None:
        """Delete an object and, like the garbage collector, what it owns (and a namespace's contents)."""
        meta = obj["metadata"]
        if resource.plural == "namespaces":
            for other in RESOURCES:
                if other.namespaced:
                    for item in self.sim.store.all(other.plural, meta["name"]):
                        self.sim.store.delete(other.plural, meta["name"], item["metadata"]["name"])
        if resource.plural == "pods":
            self.sim.delete_pod(obj)
        else:
            self.sim.store.delete(resource.plural, meta.get("namespace", ""), meta["name"])
        for plural in ("replicasets", "pods"):
            for child in self.sim.store.owned_by(plural, meta["uid"], meta.get("namespace", "")):
                self._delete_tree(BY_PLURAL[plural], child)

    # --- eviction --------------------------------------------------------------------------
    def _evict(self, r: Request, ns: str, name: str) -> Response:
        body = r.json()
        if not isinstance(body, dict) or body.get("kind", "Eviction") != "Eviction":
            raise ApiError.bad_request("the body of the request must be an Eviction")
        if (body.get("metadata") or {}).get("name", name) != name:
            raise ApiError.bad_request("name in URL does not match name in Eviction object")
        with self.sim.lock:
            pod = self.sim.store.require(BY_PLURAL["pods"], ns, name)
            if is_active(pod):
                for pdb in self.sim.store.all("poddisruptionbudgets", ns):
                    if not selector_matches(pdb["spec"].get("selector"), pod["metadata"].get("labels") or {}):
                        continue
                    _, healthy, desired = self.sim.pdb_numbers(pdb)
                    # A healthy pod may go only if the budget allows; an unready one only while the
                    # application is not already disrupted (the default IfHealthyBudget policy).
                    allowed = healthy - desired > 0 if is_pod_ready(pod) else healthy >= desired
                    if not allowed:
                        raise ApiError.too_many_requests(
                            "Cannot evict pod as it would violate the pod's disruption budget.",
                            [{"reason": "DisruptionBudget", "message":
                              f"The disruption budget {pdb['metadata']['name']} needs {desired} healthy pods and has {healthy} currently"}])
            if r.query.get("dryRun") == "All" or (body.get("deleteOptions") or {}).get("dryRun") == ["All"]:
                return json_response(201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
            self.sim.delete_pod(pod)
            self.sim.event(pod, "Normal", "Killing", f"Stopping container {pod['spec']['containers'][0]['name']}",
                           "kubelet", host=pod["spec"].get("nodeName", ""))
            self.sim.reconcile()
        log.info("sandbox.evicted", namespace=ns, pod=name)
        return json_response(201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})


def _warn(response: Response, warnings: list[str]) -> Response:
    """Warnings as the API server sends them: `Warning: 299 - "text"` headers, which kubectl prints."""
    if warnings:
        response.headers["Warning"] = ", ".join('299 - "' + w.replace('"', '\\"') + '"' for w in warnings)
    return response


def _manager(r: Request) -> str:
    """The field manager of a write: `fieldManager`, else the user agent's program name, as the API server derives it."""
    return r.query.get("fieldManager") or r.headers.get("user-agent", "").split("/")[0][:128] or "unknown"
