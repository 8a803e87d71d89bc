"""The Kubernetes API subset the sandbox serves: discovery, CRUD, patch, subresources, watch.

`Api.handle()` takes a parsed request and returns a `Response`; the HTTP layer in
`server.py` only moves bytes. Every failure is an `ApiError` answered with the API
server's code and `Status` body; a bug becomes a 500 Status, never a hang.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import prometheus_client
import structlog

from k8s.sandbox import admin, openapi, pod_log, usage
from k8s.sandbox import proto as protobuf
from k8s.sandbox.errors import ApiError
from k8s.sandbox.metrics import SANDBOX_REQUESTS
from k8s.sandbox.resources import BY_PATH, REVIEWS, Resource, group_versions, resource_list
from k8s.sandbox.simulation import Simulation
from k8s.sandbox.store import Obj, matches, parse_field_selector, parse_label_selector
from k8s.sandbox.tables import table
from k8s.sandbox.wire import JSON, MAX_BODY, Request, Response, json_response
from k8s.sandbox.writes import PATCH_TYPES, Writes

__all__ = ["MAX_BODY", "Api", "Request", "Response"]

log = structlog.get_logger(__name__)

SERVER_VERSION = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.4-sandbox", "gitCommit": "0" * 40, "gitTreeState": "clean",
    "buildDate": "2026-11-01T00:00:00Z", "goVersion": "go1.23.8", "compiler": "gc", "platform": "linux/amd64",
}
# The request bodies the sandbox reads; any other media type is answered 415 before the body is
# decoded, as kube-apiserver answers one it does not read. No Content-Type reads as JSON, as there.
# Protobuf (what kubectl's typed clients send, and do not resend as JSON after a 415) is read for
# the kinds in k8s/sandbox/proto/schema.json and refused with 415 for any other.
BODY_TYPES = (JSON, protobuf.MEDIA_TYPE)


class Api(Writes):
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
            return admin.handle(self.sim, r, parts[2:])
        if parts[:1] == ["openapi"] and r.method == "GET":
            return self._openapi(r, parts[1:])
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
        if parts[:3] == ["apis", usage.GROUP, usage.VERSION] and len(parts) > 3:
            return usage.serve(self.sim, r, parts[3:])
        if parts and parts[0] == "apis" and len(parts) > 3:
            return self._resource(r, parts[1], parts[2], parts[3:])
        raise ApiError.no_route()

    @staticmethod
    def _openapi(r: Request, parts: list[str]) -> Response:
        if parts == ["v2"]:
            accept = r.headers.get("accept", "")
            if accept and not any(t in accept for t in (JSON, "*/*")):
                raise ApiError(406, "NotAcceptable", f"only the following media types are accepted: {JSON} "
                               f"(the sandbox does not write {openapi.V2_PROTOBUF})")
            return Response(200, openapi.v2_document())
        if parts == ["v3"]:
            return Response(200, openapi.v3_index())
        document = openapi.v3_document("/".join(parts[1:])) if parts[:1] == ["v3"] else None
        if document is None:
            raise ApiError.no_route()
        return Response(200, document)

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
            return pod_log.serve(self.sim, r, ns, name)
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
        store, query = self.sim.store, {"label_selector": r.query.get("labelSelector", ""),
                                         "field_selector": r.query.get("fieldSelector", ""), "limit": limit,
                                         "continue_token": r.query.get("continue", "")}
        if "as=Table" in r.headers.get("accept", ""):
            items, rv, cont, remaining = store.list(resource, namespace, **query)
            return json_response(200, table(resource, items, rv, cont, remaining))
        # Each item is serialised once per version and the page is joined from those bytes: a
        # 100,000-pod list in pages of 500 costs the sandbox little beyond the bytes it sends.
        raw, rv, cont, remaining = store.list_json(resource, namespace, **query)
        meta: dict[str, Any] = {"resourceVersion": rv}
        if cont:
            meta["continue"] = cont
        if remaining is not None:
            meta["remainingItemCount"] = remaining
        head = orjson.dumps({"kind": resource.list_kind, "apiVersion": resource.api_version, "metadata": meta})
        return Response(200, head[:-1] + b',"items":[' + b",".join(raw) + b"]}")

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
