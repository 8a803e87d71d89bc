"""The tools' Kubernetes client: `Kube`, through the `kubernetes` client's ApiClient (never a shell),
its errors, the mutating tools' bounds, and the helpers the tools share. The tools themselves:
`kube_read` (LOW, and the summaries they return), `kube_write` (MEDIUM and HIGH); by name in
`operations.OPERATIONS`.

Requests go through the client's own transport (its auth, TLS and proxy handling) as raw
REST calls that return JSON: no model deserialisation, which is slow and strict about fields,
and patch bodies that say exactly which patch type they are. Every mutating tool sets a
value rather than adding to one, so a retry of a call that already took effect is a no-op
that says so.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import orjson
from kubernetes.client import ApiClient

JSON = dict[str, Any]
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
WORKLOAD_PLURALS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}


class ToolFailure(Exception):
    """A tool error for the caller to read (an MCP result with is_error)."""


class KubeError(ToolFailure):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# The bounds of the mutating tools, with the same names and limits as the Django settings
# (the server also runs without Django). `python -m k8s.mcp_server` checks them at start.
BOUNDS = {
    "AIOPS_MAX_SCALE_REPLICAS": (20.0, 1.0, None),
    "AIOPS_MAX_HPA_REPLICAS": (50.0, 1.0, None),
    "AIOPS_MEMORY_LIMIT_MAX_FACTOR": (2.0, 1.0, 8.0),
}


def _env_number(name: str, default: float | None = None) -> float:
    default_value, minimum, maximum = BOUNDS.get(name, (default, None, None))
    raw = os.environ.get(name, "").strip()
    if not raw:
        return float(default_value or 0)
    try:
        value = float(raw)
    except ValueError:
        raise ToolFailure(f"{name}={raw!r} is not a number") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ToolFailure(f"{name}={raw!r} is outside [{minimum:g}, {maximum if maximum is not None else 'inf'}]")
    return value


class Kube:
    def __init__(self, api: ApiClient, *, timeout: float = 20.0) -> None:
        self.api = api
        self.timeout = timeout

    # --- transport ---------------------------------------------------------------------
    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None,
                content_type: str = "application/json", raw: bool = False) -> Any:
        headers = {"Accept": "*/*" if raw else "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in (query or {}).items()
                  if v is not None]
        serialized = self.api.param_serialize(method=method, resource_path=path, query_params=params,
                                              header_params=headers, body=body, auth_settings=["BearerToken"])
        response = self.api.call_api(*serialized, _request_timeout=self.timeout)
        data = response.read()
        if response.status >= 400:
            message = response.reason or "error"
            try:
                status = orjson.loads(data)
                message = status.get("message") or message
            except orjson.JSONDecodeError:
                if data:
                    message = data.decode(errors="replace")[:500]
            raise KubeError(response.status, message)
        if raw:
            return data
        return orjson.loads(data) if data else {}

    def get(self, path: str, **query: Any) -> JSON:
        return self.request("GET", path, query=query)

    def get_or_none(self, path: str) -> JSON | None:
        try:
            return self.get(path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str, *, limit: int = 5000, **query: Any) -> list[JSON]:
        items: list[JSON] = []
        token = None
        while True:
            page = self.get(path, limit=min(500, limit), **{"continue": token}, **query)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token or len(items) >= limit:
                return items[:limit]

    def patch(self, path: str, body: Any, content_type: str = STRATEGIC) -> JSON:
        return self.request("PATCH", path, body=body, content_type=content_type)

    # --- lookups -------------------------------------------------------------------------
    def require_namespace(self, namespace: str) -> None:
        if self.get_or_none(f"/api/v1/namespaces/{namespace}") is None:
            raise ToolFailure(f"namespace {namespace!r} does not exist")

    def pod(self, namespace: str, name: str) -> JSON:
        self.require_namespace(namespace)
        pod = self.get_or_none(f"/api/v1/namespaces/{namespace}/pods/{name}")
        if pod is None:
            raise ToolFailure(f"pod {namespace}/{name} not found")
        return pod

    def deployment(self, namespace: str, name: str) -> JSON:
        self.require_namespace(namespace)
        found = self.get_or_none(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        if found is None:
            raise ToolFailure(f"deployment {namespace}/{name} not found")
        return found

    def workload(self, namespace: str, kind: str, name: str) -> tuple[str, JSON]:
        """(its API path, the object) of a Deployment, StatefulSet or DaemonSet."""
        plural = WORKLOAD_PLURALS.get(kind)
        if plural is None:
            raise ToolFailure(f"kind {kind!r} is not one of {', '.join(WORKLOAD_PLURALS)}")
        self.require_namespace(namespace)
        path = f"/apis/apps/v1/namespaces/{namespace}/{plural}/{name}"
        found = self.get_or_none(path)
        if found is None:
            raise ToolFailure(f"{kind} {namespace}/{name} not found")
        return path, found

    def node(self, name: str) -> JSON:
        found = self.get_or_none(f"/api/v1/nodes/{name}")
        if found is None:
            raise ToolFailure(f"node {name!r} not found")
        return found

    def events_about(self, namespace: str, name: str, limit: int = 20) -> list[JSON]:
        events = self.list(f"/api/v1/namespaces/{namespace}/events", fieldSelector=f"involvedObject.name={name}")
        return [_event(e) for e in _newest_first(e for e in events if (e.get("involvedObject") or {}).get("name") == name)][:limit]

    def replicasets_of(self, deployment: JSON) -> list[JSON]:
        meta = deployment["metadata"]
        labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or None
        sets = self.list(f"/apis/apps/v1/namespaces/{meta['namespace']}/replicasets", labelSelector=selector)
        uid = meta.get("uid")
        owned = [rs for rs in sets if any(o.get("uid") == uid or (not uid and o.get("name") == meta["name"])
                                           for o in (rs["metadata"].get("ownerReferences") or [])
                                           if o.get("kind") == "Deployment")]
        return sorted(owned, key=_revision)


def _revision(obj: JSON) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _history(obj: JSON) -> list[str]:
    return [x for x in (obj["metadata"].get("annotations") or {}).get(REVISION_HISTORY, "").split(",") if x]


def _ts(obj: JSON) -> str:
    return (obj.get("lastTimestamp") or obj.get("eventTime") or (obj.get("metadata") or {}).get("creationTimestamp")
            or "")


def _newest_first(events: Any) -> list[JSON]:
    return sorted(events, key=_ts, reverse=True)


def _event(e: JSON) -> JSON:
    obj = e.get("involvedObject") or {}
    return {
        "time": _ts(e), "type": e.get("type"), "reason": e.get("reason"), "message": e.get("message"),
        "object": f"{obj.get('kind', '')}/{obj.get('name', '')}", "namespace": (e.get("metadata") or {}).get("namespace"),
        "count": e.get("count"),
    }


def _images(template: JSON) -> list[str]:
    return [c.get("image", "") for c in ((template.get("spec") or {}).get("containers") or [])]


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return ""
    try:
        seconds = int((datetime.now(UTC) - datetime.fromisoformat(timestamp.replace("Z", "+00:00"))).total_seconds())
    except ValueError:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _owner(obj: JSON) -> JSON | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None
