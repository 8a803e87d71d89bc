"""The Kubernetes API subset the sandbox serves: discovery, CRUD, patch, subresources, watch.

`Api.handle()` takes a parsed request and returns a `Response`; the HTTP layer in
`server.py` only moves bytes. Every failure is an `ApiError` answered with the API
server's code and `Status` body; a bug becomes a 500 Status, never a hang.
"""

from __future__ import annotations

import hmac
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import orjson
import prometheus_client
import structlog

from k8s.sandbox import faults as fault_rules
from k8s.sandbox import logs as log_text
from k8s.sandbox import objects as o
from k8s.sandbox import patch as patching
from k8s.sandbox import proto as protobuf
from k8s.sandbox import scenarios
from k8s.sandbox.errors import ApiError
from k8s.sandbox.metrics import SANDBOX_REQUESTS
from k8s.sandbox.resources import BY_PATH, BY_PLURAL, RESOURCES, REVIEWS, Resource, group_versions, resource_list
from k8s.sandbox.simulation import Simulation, is_active, is_pod_ready
from k8s.sandbox.store import Obj, copy, matches, now_iso, parse_field_selector, parse_label_selector
from k8s.sandbox.tables import table

log = structlog.get_logger(__name__)

JSON = "application/json"
SERVER_VERSION = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.4-sandbox", "gitCommit": "0" * 40, "gitTreeState": "clean",
    "buildDate": "2026-11-01T00:00:00Z", "goVersion": "go1.23.8", "compiler": "gc", "platform": "linux/amd64",
}
# The request bodies the sandbox reads; any other media type is answered 415 before the body is
# decoded, as kube-apiserver answers one it does not read. No Content-Type reads as JSON, as there.
# Protobuf (what kubectl's typed clients send, and do not resend as JSON after a 415) is read for
# the kinds in k8s/sandbox/proto/schema.json and refused with 415 for any other.
BODY_TYPES = (JSON, protobuf.MEDIA_TYPE)
PATCH_TYPES = (patching.JSON_PATCH, patching.MERGE_PATCH, patching.STRATEGIC_MERGE_PATCH)
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
MAX_BODY = 3 * 1024 * 1024


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = JSON
    stream: Iterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, data: Any) -> Response:
    return Response(status, orjson.dumps(data))


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""

    @classmethod
    def build(cls, method: str, target: str, headers: dict[str, str], body: bytes) -> Request:
        path, _, qs = target.partition("?")
        query = {k: v[-1] for k, v in parse_qs(qs, keep_blank_values=True).items()}
        return cls(method, path.rstrip("/") or "/", query, {k.lower(): v for k, v in headers.items()}, body)

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("1", "true")

    def json(self) -> Any:
        try:
            return orjson.loads(self.body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise ApiError.bad_request(f"the body of the request could not be decoded: {exc}") from None


class Api:
    def __init__(self, sim: Simulation, token: str, *, api_needs_token: bool = True) -> None:
        self.sim = sim
        self.token = token
        # kubectl never sends a bearer token over plain HTTP, so a plain-HTTP sandbox serves its
        # Kubernetes API unauthenticated on loopback (like `kubectl proxy`); its admin endpoint,
        # which injects faults, always needs the token.
        self.api_needs_token = api_needs_token
        self.stopping = threading.Event()
        # Watch streams end when the epoch moves on; while `watch_outage` is set, new watches get
        # 503 (an API server that is restarting), lists and writes still work.
        self.watch_epoch = 0
        self.watch_outage = threading.Event()
        # Seconds of quiet on a watch after which it gets a BOOKMARK (kube-apiserver: about a minute).
        self.bookmark_interval = 1.0

    # --- entry -----------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        try:
            response = self._route(request)
        except ApiError as exc:
            response = json_response(exc.code, exc.status())
        except Exception as exc:  # a sandbox bug must answer, not hang the client
            log.exception("sandbox.internal_error", path=request.path, method=request.method)
            response = json_response(500, ApiError(500, "InternalError", f"Internal error occurred: {exc}").status())
        SANDBOX_REQUESTS.labels(verb=request.method, code=str(response.status)).inc()
        return response

    def _authorized(self, request: Request) -> bool:
        # The scheme is case-insensitive (RFC 7235), as kube-apiserver treats it: the kubernetes
        # client's in-cluster loader sends "bearer <token>".
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return bool(self.token) and scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), self.token)

    def _route(self, r: Request) -> Response:
        if r.path in ("/healthz", "/livez", "/readyz"):
            return Response(200, b"ok", "text/plain; charset=utf-8")
        if r.path == "/version":
            return json_response(200, SERVER_VERSION)
        if r.body or r.method == "PATCH":
            accepted = PATCH_TYPES if r.method == "PATCH" else BODY_TYPES
            if r.media_type not in accepted and (r.media_type or r.method == "PATCH"):
                raise ApiError.unsupported_media_type(r.media_type, accepted)
            if r.media_type == protobuf.MEDIA_TYPE:
                try:
                    r.body = orjson.dumps(protobuf.decode(r.body))
                except protobuf.Unreadable as exc:
                    raise ApiError(415, "UnsupportedMediaType", f"the sandbox cannot read this protobuf body ({exc}); "
                                   f"send it as {JSON}") from None
        if r.path == "/metrics":
            # This process's own metrics (under `make run` the web's /metrics also serves them).
            return Response(200, prometheus_client.generate_latest(), prometheus_client.CONTENT_TYPE_LATEST)
        parts = [p for p in r.path.split("/") if p]
        if (self.api_needs_token or parts[:1] == ["sandbox"]) and not self._authorized(r):
            raise ApiError.unauthorized()
        if parts[:2] == ["sandbox", "v1"]:
            return self._admin(r, parts[2:])
        if parts == ["api"]:
            return json_response(200, {"kind": "APIVersions", "versions": ["v1"],
                                       "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
        if parts == ["apis"]:
            return json_response(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                self._group(g, vs) for g, vs in group_versions().items() if g]})
        if parts == ["api", "v1"]:
            return json_response(200, resource_list("", "v1"))
        if len(parts) == 2 and parts[0] == "apis":
            versions = group_versions().get(parts[1])
            if not versions:
                raise ApiError.no_route()
            return json_response(200, {"kind": "APIGroup", "apiVersion": "v1", **self._group(parts[1], versions)})
        if len(parts) == 3 and parts[0] == "apis":
            if parts[2] not in group_versions().get(parts[1], []):
                raise ApiError.no_route()
            return json_response(200, resource_list(parts[1], parts[2]))
        if parts and parts[0] == "api" and len(parts) > 2 and parts[1] == "v1":
            return self._resource(r, "", "v1", parts[2:])
        if parts and parts[0] == "apis" and len(parts) > 3:
            return self._resource(r, parts[1], parts[2], parts[3:])
        raise ApiError.no_route()

    @staticmethod
    def _group(name: str, versions: list[str]) -> dict[str, Any]:
        gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}

    # --- resource paths --------------------------------------------------------------------
    def _resource(self, r: Request, group: str, version: str, rest: list[str]) -> Response:
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        resource = BY_PATH.get((group, version, rest[0]))
        if resource is None or (namespace is not None and not resource.namespaced):
            raise ApiError.no_route()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if resource in REVIEWS:
            if name is not None:
                raise ApiError.no_route()
            if r.method != "POST":
                raise ApiError.method_not_allowed()
            return self._review(r, resource)
        if len(rest) > 3 or (sub is not None and sub not in resource.subresources):
            raise ApiError.no_route()
        if resource.namespaced and name is not None and namespace is None:
            raise ApiError.no_route()
        if name is None:
            if r.method == "GET":
                return self._watch(r, resource, namespace) if r.flag("watch") else self._list(r, resource, namespace)
            if r.method == "POST":
                return self._create(r, resource, namespace or "")
            raise ApiError.method_not_allowed()
        ns = namespace or ""
        if sub == "log" and r.method == "GET":
            return self._logs(r, ns, name)
        if sub == "eviction" and r.method == "POST":
            return self._evict(r, ns, name)
        if sub == "scale":
            return self._scale(r, resource, ns, name)
        if r.method == "GET":
            with self.sim.lock:
                obj = self.sim.store.require(resource, ns, name)
            return self._object(r, resource, obj)
        if r.method == "PATCH":
            return self._patch(r, resource, ns, name, sub)
        if r.method == "PUT":
            return self._replace(r, resource, ns, name, sub)
        if r.method == "DELETE" and sub is None:
            return self._delete(r, resource, ns, name)
        raise ApiError.method_not_allowed()

    def _object(self, r: Request, resource: Resource, obj: Obj) -> Response:
        if "as=Table" in r.headers.get("accept", ""):
            return json_response(200, table(resource, [obj], obj["metadata"]["resourceVersion"], "", None))
        return json_response(200, obj)

    # --- list / watch ----------------------------------------------------------------------
    def _list(self, r: Request, resource: Resource, namespace: str | None) -> Response:
        try:
            limit = int(r.query.get("limit") or 0)
        except ValueError:
            raise ApiError.bad_request(f"limit: Invalid value: {r.query['limit']!r}: must be an integer") from None
        if limit < 0:
            raise ApiError.bad_request(f"limit: Invalid value: {limit}: must be greater than or equal to 0")
        items, rv, cont, remaining = self.sim.store.list(
            resource, namespace, label_selector=r.query.get("labelSelector", ""),
            field_selector=r.query.get("fieldSelector", ""), limit=limit, continue_token=r.query.get("continue", ""))
        if "as=Table" in r.headers.get("accept", ""):
            return json_response(200, table(resource, items, rv, cont, remaining))
        meta: dict[str, Any] = {"resourceVersion": rv}
        if cont:
            meta["continue"] = cont
        if remaining is not None:
            meta["remainingItemCount"] = remaining
        return json_response(200, {"kind": resource.list_kind, "apiVersion": resource.api_version, "metadata": meta, "items": items})

    def _watch(self, r: Request, resource: Resource, namespace: str | None) -> Response:
        labels = parse_label_selector(r.query.get("labelSelector", ""))
        fields = parse_field_selector(r.query.get("fieldSelector", ""), resource)
        try:
            timeout = min(int(r.query.get("timeoutSeconds") or 1800), 3600)
            since = int(r.query.get("resourceVersion") or 0)
        except ValueError:
            raise ApiError.bad_request("resourceVersion and timeoutSeconds must be integers") from None
        if self.watch_outage.is_set():
            raise ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
        store = self.sim.store
        epoch = self.watch_epoch
        bookmarks = r.flag("allowWatchBookmarks")

        as_table = "as=Table" in r.headers.get("accept", "")

        def encode(kind: str, obj: Obj) -> bytes:
            if as_table:  # `kubectl get -w` asks for each event's object as a one-row Table
                obj = table(resource, [obj], obj["metadata"].get("resourceVersion", ""), "", None)
            return orjson.dumps({"type": kind, "object": obj}) + b"\n"

        def wanted(obj: Obj) -> bool:
            return (namespace is None or obj["metadata"].get("namespace") == namespace) and matches(obj, labels, fields)

        def events() -> Iterator[bytes]:
            deadline = time.monotonic() + timeout
            with store.lock:
                if since and since < store.oldest_logged_rv() - 1:
                    # As kube-apiserver's watch cache answers a resourceVersion it no longer holds:
                    # 200, then one ERROR event carrying a 410 Status; the client must list again.
                    gone = ApiError(410, "Expired", f"too old resource version: {since} ({store.oldest_logged_rv() - 1})")
                    yield orjson.dumps({"type": "ERROR", "object": gone.status()}) + b"\n"
                    return
                if not since:
                    initial = [obj for obj in store.all(resource.plural) if wanted(obj)]
                    cursor = store.rv
                else:
                    initial, cursor = [], since
            for obj in initial:
                yield encode("ADDED", obj)
            last_sent = time.monotonic()
            bookmarked = cursor
            while not self.stopping.is_set() and epoch == self.watch_epoch and time.monotonic() < deadline:
                with store.lock:
                    fresh = store.events_since(cursor)
                    if not fresh:
                        store.changed.wait(timeout=min(1.0, self.bookmark_interval))
                        fresh = store.events_since(cursor)
                for rv, plural, kind, obj in fresh:
                    cursor = rv
                    if plural == resource.plural and wanted(obj):
                        yield encode(kind, obj)
                        last_sent, bookmarked = time.monotonic(), rv
                # A bookmark carries the resourceVersion this watch has read up to, so a client that
                # reconnects resumes from there even when other kinds' writes moved the log on and
                # none of its own kind's did (a quiet kind's last event would soon be too old).
                if bookmarks and cursor != bookmarked and time.monotonic() - last_sent >= self.bookmark_interval:
                    yield orjson.dumps({"type": "BOOKMARK", "object": {"kind": resource.kind, "apiVersion": resource.api_version,
                                                                       "metadata": {"resourceVersion": str(cursor)}}}) + b"\n"
                    last_sent, bookmarked = time.monotonic(), cursor

        return Response(200, content_type=JSON, stream=events())

    def interrupt_watches(self) -> None:
        """End every open watch stream (as an API server restart does); clients reconnect."""
        self.watch_epoch += 1

    # --- create ----------------------------------------------------------------------------
    def _create(self, r: Request, resource: Resource, namespace: str) -> Response:
        body = r.json()
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request must be a JSON object")
        meta = body.setdefault("metadata", {})
        if body.get("kind") not in (None, resource.kind) or body.get("apiVersion") not in (None, resource.api_version):
            raise ApiError.bad_request(f"the API version in the data ({body.get('apiVersion')}) does not match the expected API version ({resource.api_version})")
        body["kind"], body["apiVersion"] = resource.kind, resource.api_version
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
            self._defaults(resource, body)
            self._validate(resource, body)
            if r.query.get("dryRun") == "All":
                if self.sim.store.get(resource.plural, namespace if resource.namespaced else "", name) is not None:
                    raise ApiError.already_exists(resource, name)
                return json_response(201, body)
            created = self.sim.store.create(resource.plural, body)
            self.sim.reconcile()
        log.info("sandbox.created", resource=resource.plural, namespace=namespace, name=name)
        return json_response(201, created)

    @staticmethod
    def _review(r: Request, resource: Resource) -> Response:
        """Answer a (self) subject access review: allowed, as the sandbox authorizes every request it serves."""
        body = r.json()
        if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
            raise ApiError.bad_request(f"the body of the request must be a {resource.kind} with a spec")
        if body.get("kind") not in (None, resource.kind) or body.get("apiVersion") not in (None, resource.api_version):
            raise ApiError.bad_request(f"the API version in the data ({body.get('apiVersion')}) does not match the expected API version ({resource.api_version})")
        spec = body["spec"]
        causes = []
        if bool(spec.get("resourceAttributes")) == bool(spec.get("nonResourceAttributes")):
            causes.append(("spec.resourceAttributes", "FieldValueInvalid",
                           "Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified"))
        if resource.plural == "subjectaccessreviews" and not spec.get("user") and not spec.get("groups"):
            causes.append(("spec.user", "FieldValueInvalid", "Invalid value: \"\": at least one of user or group must be specified"))
        if causes:
            raise ApiError.invalid(resource, "", causes)
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        return json_response(201, {
            "kind": resource.kind, "apiVersion": resource.api_version, "metadata": {**metadata, "creationTimestamp": None},
            "spec": spec, "status": {"allowed": True, "reason": "the sandbox has no RBAC: it allows every request it serves"},
        })

    @staticmethod
    def _defaults(resource: Resource, body: Obj) -> None:
        spec = body.setdefault("spec", {}) if resource.plural not in ("events", "endpoints") else None
        if resource.plural not in ("events", "endpoints"):
            body["status"] = {"phase": "Active"} if resource.plural == "namespaces" else {}
        if resource.plural == "namespaces":
            body["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = body["metadata"]["name"]
            body["spec"] = {"finalizers": ["kubernetes"]}
        if resource.plural == "deployments" and spec is not None:
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        if resource.plural == "jobs" and spec is not None:
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("completions", 1)
            spec.setdefault("parallelism", 1)
            spec.setdefault("template", {}).setdefault("spec", {}).setdefault("restartPolicy", "Never")
        if resource.plural == "pods" and spec is not None:
            body["status"] = {"phase": "Pending", "qosClass": Simulation._qos(spec) if spec.get("containers") else "BestEffort"}
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("schedulerName", "default-scheduler")

    # --- validation ------------------------------------------------------------------------
    def _validate(self, resource: Resource, obj: Obj) -> None:
        name = obj["metadata"].get("name", "")
        causes: list[tuple[str, str, str]] = []
        spec = obj.get("spec") or {}

        def non_negative_int(path: str, value: Any) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                causes.append((path, "FieldValueInvalid", f"Invalid value: {orjson.dumps(value).decode()}: must be greater than or equal to 0"))

        def pod_spec(path: str, ps: Any) -> None:
            containers = ps.get("containers") if isinstance(ps, dict) else None
            if not isinstance(containers, list) or not containers:
                causes.append((f"{path}.containers", "FieldValueRequired", "Required value"))
                return
            for i, c in enumerate(containers):
                if not isinstance(c, dict) or not c.get("name"):
                    causes.append((f"{path}.containers[{i}].name", "FieldValueRequired", "Required value"))
                    continue
                if not c.get("image"):
                    causes.append((f"{path}.containers[{i}].image", "FieldValueRequired", "Required value"))
                for kind in ("requests", "limits"):
                    for res, qty in ((c.get("resources") or {}).get(kind) or {}).items():
                        try:
                            o.parse_cpu(qty) if res == "cpu" else o.parse_bytes(qty)
                        except (ValueError, TypeError):
                            causes.append((f"{path}.containers[{i}].resources.{kind}[{res}]", "FieldValueInvalid",
                                           f"Invalid value: {orjson.dumps(qty).decode()}: quantities must match the regular expression "
                                           "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"))

        if resource.plural in ("deployments", "replicasets"):
            non_negative_int("spec.replicas", spec.get("replicas", 1))
            template = spec.get("template") or {}
            selector = spec.get("selector") or {}
            if not selector.get("matchLabels") and not selector.get("matchExpressions"):
                causes.append(("spec.selector", "FieldValueRequired", "Required value"))
            labels = (template.get("metadata") or {}).get("labels") or {}
            if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items() if k != "pod-template-hash"):
                causes.append(("spec.template.metadata.labels", "FieldValueInvalid",
                               f"Invalid value: {orjson.dumps(labels).decode()}: `selector` does not match template `labels`"))
            pod_spec("spec.template.spec", template.get("spec"))
        elif resource.plural in ("jobs", "daemonsets"):
            pod_spec("spec.template.spec", (spec.get("template") or {}).get("spec"))
        elif resource.plural == "pods":
            pod_spec("spec", spec)
        elif resource.plural == "horizontalpodautoscalers":
            max_r, min_r = spec.get("maxReplicas"), spec.get("minReplicas", 1)
            if not isinstance(max_r, int) or isinstance(max_r, bool) or max_r < 1:
                causes.append(("spec.maxReplicas", "FieldValueInvalid", f"Invalid value: {orjson.dumps(max_r).decode()}: must be greater than or equal to 1"))
            elif not isinstance(min_r, int) or min_r < 1 or min_r > max_r:
                causes.append(("spec.minReplicas", "FieldValueInvalid", f"Invalid value: {orjson.dumps(min_r).decode()}: must be less than or equal to maxReplicas"))
            if not (spec.get("scaleTargetRef") or {}).get("name"):
                causes.append(("spec.scaleTargetRef.name", "FieldValueRequired", "Required value"))
        elif resource.plural == "nodes":
            if "unschedulable" in spec and not isinstance(spec["unschedulable"], bool):
                causes.append(("spec.unschedulable", "FieldValueTypeInvalid", "Invalid value: must be a boolean"))
        if causes:
            raise ApiError.invalid(resource, name, causes)

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
        with self.sim.lock:
            current = self.sim.store.require(resource, ns, name)
            patched = self._apply_patch(r, resource, current)
            return self._write(r, resource, current, patched, sub)

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
        if sub == "status":
            merged = copy(current)
            merged["status"] = new.get("status") or {}
            new = merged
        elif "status" in current:
            new["status"] = current["status"]
        if resource.plural == "pods":
            self._check_pod_update(resource, current, new)
        self._validate(resource, new)
        if r.query.get("dryRun") == "All":
            return json_response(200, new)
        stored = self.sim.store.put(resource.plural, new)
        self.sim.reconcile()
        log.info("sandbox.updated", resource=resource.plural, namespace=current["metadata"].get("namespace", ""), name=name)
        return json_response(200, stored)

    @staticmethod
    def _check_pod_update(resource: Resource, current: Obj, new: Obj) -> None:
        old_spec, new_spec = copy(current["spec"]), copy(new.get("spec") or {})
        for spec in (old_spec, new_spec):
            for c in spec.get("containers") or ():
                c.pop("image", None)
            spec.pop("activeDeadlineSeconds", None)
            spec.pop("tolerations", None)
        if old_spec != new_spec:
            raise ApiError.invalid(resource, current["metadata"]["name"], [(
                "spec", "FieldValueForbidden",
                "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
                "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
                "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)")])

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
                    from k8s.sandbox.store import selector_matches

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

    # --- logs ------------------------------------------------------------------------------
    def _logs(self, r: Request, ns: str, name: str) -> Response:
        with self.sim.lock:
            pod = self.sim.store.require(BY_PLURAL["pods"], ns, name)
        containers = [c["name"] for c in pod["spec"]["containers"]]
        container = r.query.get("container") or ""
        if not container:
            if len(containers) > 1:
                raise ApiError.bad_request(f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]")
            container = containers[0]
        if container not in containers:
            raise ApiError.bad_request(f"container {container} is not valid for pod {name}")
        cs = next((c for c in (pod.get("status") or {}).get("containerStatuses") or () if c["name"] == container), None)
        previous = r.flag("previous")
        spec = next(c for c in pod["spec"]["containers"] if c["name"] == container)
        state = (cs or {}).get("state") or {}
        last = ((cs or {}).get("lastState") or {}).get("terminated")
        if cs is None or ("waiting" in state and not last and not previous):
            reason = (state.get("waiting") or {}).get("reason", "ContainerCreating")
            if reason in ("ImagePullBackOff", "ErrImagePull"):
                raise ApiError.bad_request(f'container "{container}" in pod "{name}" is waiting to start: trying and failing to pull image')
            raise ApiError.bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        runtime = (pod["metadata"].get("annotations") or {}).get("sandbox.aiops.dev/runtime", "python")
        app = pod["metadata"].get("labels", {}).get("app.kubernetes.io/name", container)
        seed = sum(map(ord, name))
        if previous:
            if not last:
                raise ApiError.bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
            lines = log_text.render(runtime, app, log_text.terminated_state(last, spec), _parse_ts(last["startedAt"]), seed=seed)
        elif "running" in state:
            kind = "probe_failure" if not cs.get("ready") and cs.get("started") else "running"
            lines = log_text.render(runtime, app, kind, _parse_ts(state["running"].get("startedAt")), seed=seed)
        elif "terminated" in state:
            term = state["terminated"]
            kind = "job_failed" if term.get("exitCode") and o.controller_of(pod) and o.controller_of(pod)["kind"] == "Job" else (
                "job_succeeded" if o.controller_of(pod) and o.controller_of(pod)["kind"] == "Job" else "oom_killed")
            lines = log_text.render(runtime, app, kind, _parse_ts(term.get("startedAt")), seed=seed)
        else:  # waiting after a crash: the last instance's log, which is what a kubelet serves
            # From the instance's own start: a liveness-killed one ran a minute, not 3 s.
            started = _parse_ts(last["startedAt"]) if last.get("startedAt") else _parse_ts(last["finishedAt"]) - timedelta(seconds=3)
            lines = log_text.render(runtime, app, log_text.terminated_state(last, spec), started, seed=seed + 1)
        return Response(200, self._format_log(r, lines), "text/plain")

    @staticmethod
    def _format_log(r: Request, lines: list[tuple[datetime, str]]) -> bytes:
        try:
            tail = int(r.query["tailLines"]) if r.query.get("tailLines") else None
            limit = int(r.query["limitBytes"]) if r.query.get("limitBytes") else None
        except ValueError:
            raise ApiError.bad_request("tailLines and limitBytes must be integers") from None
        if tail is not None:
            if tail < 0:
                raise ApiError.bad_request(f"tailLines: Invalid value: {tail}: must be greater than or equal to 0")
            lines = lines[-tail:] if tail else []
        stamps = r.flag("timestamps")
        text = "".join((f"{t.strftime('%Y-%m-%dT%H:%M:%S.%f')}000Z " if stamps else "") + line + "\n" for t, line in lines)
        data = text.encode()
        return data[:limit] if limit is not None and limit > 0 else data

    # --- the sandbox's own admin endpoint --------------------------------------------------
    def _admin(self, r: Request, parts: list[str]) -> Response:
        sim = self.sim
        try:
            if parts == ["faults"] and r.method == "GET":
                with sim.lock:
                    return json_response(200, {"faults": [f.describe() for f in sim.faults],
                                               "cleared": [{**f.describe(), "cleared_by": why} for f, why in sim.cleared[-50:]]})
            body = r.json() if r.body else {}
            if not isinstance(body, dict):
                raise ApiError.bad_request("the body must be a JSON object")
            if parts == ["faults"] and r.method == "POST":
                ftype, target = body.get("type"), body.get("target")
                if not isinstance(ftype, str) or not isinstance(target, str):
                    raise ApiError.bad_request("give a fault type and a target: {\"type\": ..., \"target\": ...}")
                options = body.get("options") or {}
                if not isinstance(options, dict):
                    raise ApiError.bad_request("options must be an object")
                fault = fault_rules.inject(sim, ftype, target, **options)
                return json_response(201, fault.describe())
            if parts == ["faults", "clear"] and r.method == "POST":
                target = body.get("target")
                if not isinstance(target, str):
                    raise ApiError.bad_request("give the target to clear: {\"target\": ...}")
                return json_response(200, {"cleared": [f.describe() for f in fault_rules.clear(sim, target)]})
            if parts == ["reset"] and r.method == "POST":
                scenarios.load(sim, str(body.get("scenario", "demo")))
                return json_response(200, {"scenario": body.get("scenario", "demo")})
            if parts == ["tick"] and r.method == "POST":
                sim.tick()
                return json_response(200, {"ticks": sim.ticks})
            if parts == ["generate"] and r.method == "POST":
                return json_response(201, scenarios.generate(sim, pods=int(body.get("pods", 0)), nodes=body.get("nodes"),
                                                             deployments=body.get("deployments")))
        except fault_rules.FaultError as exc:
            raise ApiError(404 if "no " in str(exc)[:3] else 400, "NotFound" if "no " in str(exc)[:3] else "BadRequest", str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise ApiError.bad_request(f"bad option: {exc}") from None
        raise ApiError.no_route()


def _parse_ts(ts: str | None) -> datetime:
    if not ts:
        return datetime.now(UTC)
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
